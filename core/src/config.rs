//! TOML configuration of the coordinator and of a client node, and the federation plan sent at join.
//!
//! Every field is documented; `examples/coordinator.toml` and `examples/client.toml` are working examples.
//! Relative paths in a config file are resolved against the file's directory.

use crate::model::{ModelSpec, TaskKind};
use crate::pki::NodeFiles;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

mod influence;

pub use influence::{DEFAULT_MAX_UPDATE_NORM, InfluenceSection, MAX_WEIGHT_LIMIT, Weighting};

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or a field has the wrong type.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column from the TOML parser.
        message: String,
    },
    /// The values are inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Paths of the node's TLS material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The federation CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// This node's certificate (PEM).
    pub cert: PathBuf,
    /// This node's private key (PEM, mode 0600).
    pub key: PathBuf,
}

impl TlsSection {
    /// The TLS files as [`NodeFiles`].
    pub fn files(&self) -> NodeFiles {
        NodeFiles { ca_cert: self.ca_cert.clone(), cert: self.cert.clone(), key: self.key.clone() }
    }

    fn resolve(&mut self, base: &Path) {
        for p in [&mut self.ca_cert, &mut self.cert, &mut self.key] {
            *p = resolve(base, p);
        }
    }
}

/// The federation's data schema: which columns are features, which is the label, and the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// Feature column names, in model input order.
    pub features: Vec<String>,
    /// Label column name.
    pub label: String,
    /// The task.
    pub task: TaskKind,
    /// Number of classes (2 for binary; required for multiclass; ignored for regression).
    #[serde(default)]
    pub classes: Option<usize>,
    /// The plausible range `[lower, upper]` of each feature, in feature order, declared by the federation
    /// independently of any node's data. When given, a node running DP releases DP feature statistics against
    /// these bounds before it trains (recorded in its ledger) and warns about columns whose values pile up at a
    /// bound, the usual sign of a unit mismatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounds: Option<Vec<[f64; 2]>>,
    /// The plausible range `[lower, upper]` of a regression target, declared like `bounds`. A node running DP
    /// needs it to release its evaluation (clipped sums of errors and targets against this range, see
    /// [`crate::metrics::regression_sums`]); without it such a node reports no evaluation. Ignored for
    /// classification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_bounds: Option<[f64; 2]>,
}

impl Schema {
    /// Number of model outputs: classes for classification, 1 for regression.
    pub fn outputs(&self) -> usize {
        match self.task {
            TaskKind::Binary => 2,
            TaskKind::Multiclass => self.classes.unwrap_or(2),
            TaskKind::Regression => 1,
        }
    }

    /// The federation-wide feature scaling implied by the declared `bounds`: `(center, scale)` per feature,
    /// mapping each declared range onto [-1, 1] by `(x - center) / scale`. Every node and every server applies
    /// exactly this, so there is no training/serving skew. `None` without bounds (nodes then standardize with
    /// their own statistics).
    pub fn declared_scaling(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        let bounds = self.bounds.as_ref()?;
        let center = bounds.iter().map(|[lo, hi]| ((lo + hi) / 2.0) as f32).collect();
        let scale = bounds.iter().map(|[lo, hi]| ((hi - lo) / 2.0) as f32).collect();
        Some((center, scale))
    }

    /// Checks the schema is usable.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] on an empty feature list, a label among the features, or a bad class count.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.features.is_empty() {
            return Err(ConfigError::Invalid("schema.features is empty".into()));
        }
        if self.features.contains(&self.label) {
            return Err(ConfigError::Invalid(format!("label column {:?} is also listed as a feature", self.label)));
        }
        if self.task == TaskKind::Multiclass {
            match self.classes {
                None => {
                    return Err(ConfigError::Invalid(
                        "schema.classes is missing: a multiclass task needs the number of classes".into(),
                    ));
                }
                Some(c) if c < 2 => {
                    return Err(ConfigError::Invalid(format!(
                        "schema.classes = {c}: a multiclass task needs at least 2 classes"
                    )));
                }
                Some(_) => {}
            }
        }
        if let Some(bounds) = &self.bounds {
            if bounds.len() != self.features.len() {
                return Err(ConfigError::Invalid(format!(
                    "schema.bounds has {} ranges for {} features",
                    bounds.len(),
                    self.features.len()
                )));
            }
            if let Some((i, [lo, hi])) =
                bounds.iter().enumerate().find(|(_, [lo, hi])| !(lo.is_finite() && hi.is_finite() && lo < hi))
            {
                return Err(ConfigError::Invalid(format!(
                    "schema.bounds for {:?} is [{lo}, {hi}]: it must be finite with lower < upper",
                    self.features[i]
                )));
            }
        }
        if let Some([lo, hi]) = self.label_bounds
            && !(lo.is_finite() && hi.is_finite() && lo < hi)
        {
            return Err(ConfigError::Invalid(format!(
                "schema.label_bounds is [{lo}, {hi}]: it must be finite with lower < upper"
            )));
        }
        Ok(())
    }
}

/// Which aggregation strategy the coordinator runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "name", rename_all = "lowercase", deny_unknown_fields)]
pub enum StrategyConfig {
    /// FedAvg (McMahan et al. 2017): the example-weighted mean of client models.
    #[default]
    Fedavg,
    /// FedProx (Li et al. 2020): FedAvg with a proximal term `mu/2 * |w - w_global|^2` in each client's loss.
    Fedprox {
        /// Proximal coefficient.
        #[serde(default = "default_mu")]
        mu: f64,
    },
    /// FedAdam (Reddi et al. 2021): Adam on the server, with the mean client delta as pseudo-gradient.
    Fedadam {
        /// Server learning rate.
        #[serde(default = "default_server_lr")]
        lr: f64,
        /// First-moment decay.
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// Second-moment decay.
        #[serde(default = "default_beta2")]
        beta2: f64,
        /// Adaptivity (epsilon) term.
        #[serde(default = "default_tau")]
        tau: f64,
    },
    /// Coordinate-wise median of the client deltas (Yin et al. 2018, "Byzantine-Robust Distributed Learning:
    /// Towards Optimal Statistical Rates"): a minority of hostile hospitals cannot move any coordinate beyond
    /// the honest ones' range. Unweighted; needs each update, so it refuses secure aggregation.
    Median,
    /// Coordinate-wise trimmed mean (Yin et al. 2018): per coordinate, the `trim` fraction of largest and of
    /// smallest deltas is dropped and the rest averaged. Unweighted; refuses secure aggregation.
    #[serde(rename = "trimmed-mean")]
    TrimmedMean {
        /// Fraction dropped at each end, in [0, 0.5).
        #[serde(default = "default_trim")]
        trim: f64,
    },
}

fn default_trim() -> f64 {
    0.1
}

fn default_mu() -> f64 {
    0.01
}
fn default_server_lr() -> f64 {
    0.1
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.99
}
fn default_tau() -> f64 {
    1e-3
}

/// Training settings of the federation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSection {
    /// Number of rounds.
    #[serde(default = "default_rounds")]
    pub rounds: u64,
    /// Local epochs per round.
    #[serde(default = "default_epochs")]
    pub local_epochs: u32,
    /// Local SGD learning rate.
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    /// Local batch size (non-private training; DP-SGD uses Poisson sampling instead).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Minimum number of updates for a round to complete.
    #[serde(default = "default_min_clients")]
    pub min_clients: usize,
    /// Seconds a round waits for updates before closing with what it has (if at least `min_clients`).
    #[serde(default = "default_deadline")]
    pub round_deadline_secs: u64,
    /// How many joined clients are selected per round (default: all). Each round's evaluation then asks
    /// another sample of as many.
    #[serde(default)]
    pub clients_per_round: Option<usize>,
    /// How many times in a row one round may fail (too few updates, a failed secure round) before the
    /// federation stops with an error instead of retrying; retries back off from 1 s, doubling up to the
    /// round deadline.
    #[serde(default = "default_max_round_failures")]
    pub max_round_failures: u32,
}

fn default_rounds() -> u64 {
    10
}
fn default_epochs() -> u32 {
    1
}
fn default_lr() -> f64 {
    0.1
}
fn default_batch() -> usize {
    32
}
fn default_min_clients() -> usize {
    2
}
fn default_deadline() -> u64 {
    120
}
fn default_max_round_failures() -> u32 {
    5
}

impl Default for TrainingSection {
    fn default() -> Self {
        Self {
            rounds: default_rounds(),
            local_epochs: default_epochs(),
            learning_rate: default_lr(),
            batch_size: default_batch(),
            min_clients: default_min_clients(),
            round_deadline_secs: default_deadline(),
            clients_per_round: None,
            max_round_failures: default_max_round_failures(),
        }
    }
}

/// The model architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Model name in the registry.
    #[serde(default = "default_model_name")]
    pub name: String,
    /// Hidden layer widths; empty for logistic (or linear) regression.
    #[serde(default)]
    pub hidden: Vec<usize>,
}

fn default_model_name() -> String {
    "model".into()
}

impl Default for ModelSection {
    fn default() -> Self {
        Self { name: default_model_name(), hidden: Vec::new() }
    }
}

/// Secure aggregation mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SecureAggregationMode {
    /// Updates travel in plaintext inside mutual TLS; the coordinator sees each one.
    #[serde(rename = "none")]
    #[default]
    None,
    /// Threshold RLWE: the coordinator sees only the sum.
    #[serde(rename = "threshold-rlwe")]
    ThresholdRlwe,
}

/// Secure aggregation settings of the coordinator (and of the plan it sends).
///
/// The decryption threshold `t` and the smallest decryptable set `min_participants` follow from
/// `max_colluders` = c, the number of hospitals that may collude with a malicious coordinator: a round of n key
/// holders uses t = ⌊(n + c) / 2⌋ + 1, so that two different decryptions of one round are impossible, and
/// `min_participants` ≥ c + 2, so that every decrypted sum holds at least two honest updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecureAggregationSection {
    /// The mode.
    #[serde(default)]
    pub mode: SecureAggregationMode,
    /// How many hospitals may collude with the coordinator (c).
    #[serde(default = "default_max_colluders")]
    pub max_colluders: usize,
    /// Decryption threshold t; default (and minimum): ⌊(n + c) / 2⌋ + 1 for a round of n participants.
    #[serde(default)]
    pub threshold: Option<usize>,
    /// Smallest participant set a key holder agrees to decrypt; default (and minimum): c + 2.
    #[serde(default)]
    pub min_participants: Option<usize>,
}

fn default_max_colluders() -> usize {
    1
}

impl Default for SecureAggregationSection {
    fn default() -> Self {
        Self {
            mode: SecureAggregationMode::None,
            max_colluders: default_max_colluders(),
            threshold: None,
            min_participants: None,
        }
    }
}

impl SecureAggregationSection {
    /// The smallest decryptable set: the configured value, or c + 2.
    pub fn min_participants(&self) -> usize {
        self.min_participants.unwrap_or(self.max_colluders + 2)
    }

    /// Checks the collusion bounds.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let c = self.max_colluders;
        if self.min_participants() < c + 2 {
            return Err(ConfigError::Invalid(format!(
                "secure_aggregation.min_participants = {} is below max_colluders + 2 = {}: a decrypted sum could hold a \
                 single honest update",
                self.min_participants(),
                c + 2
            )));
        }
        Ok(())
    }
}

/// A client's floor for secure aggregation: the weakest task it accepts. Tasks below it are declined and the
/// refusal is recorded in the node's ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSecureAggregation {
    /// Refuse plaintext training: every update must travel inside secure aggregation.
    #[serde(default = "default_true")]
    pub required: bool,
    /// The number of hospitals this node assumes may collude with the coordinator; the announced threshold
    /// must satisfy t > (n + c) / 2 for this c, and the announcement's own c may not be smaller.
    #[serde(default = "default_max_colluders")]
    pub max_colluders: usize,
    /// Smallest decryptable set this node accepts (at least max_colluders + 2).
    #[serde(default = "default_client_min_participants")]
    pub min_participants: usize,
    /// Smallest decryption threshold this node accepts.
    #[serde(default = "default_min_threshold")]
    pub min_threshold: usize,
    /// Statistical security of the flooding noise, in bits: the partial decryptions' distance from
    /// simulated ones over the whole model must be at most 2^-bits.
    #[serde(default = "default_statistical_security")]
    pub min_statistical_security: u32,
}

fn default_client_min_participants() -> usize {
    3
}

fn default_min_threshold() -> usize {
    2
}

fn default_statistical_security() -> u32 {
    40
}

impl Default for ClientSecureAggregation {
    fn default() -> Self {
        Self {
            required: true,
            max_colluders: default_max_colluders(),
            min_participants: default_client_min_participants(),
            min_threshold: default_min_threshold(),
            min_statistical_security: default_statistical_security(),
        }
    }
}

/// The coordinator's configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Federation identifier; every message must carry it.
    pub federation_id: String,
    /// Address to listen on, e.g. `0.0.0.0:7443`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Directory for the registry, checkpoints and the ledger copies.
    pub data_dir: PathBuf,
    /// TLS material of the coordinator.
    pub tls: TlsSection,
    /// Names (certificate CNs) of the clients allowed to join.
    pub roster: Vec<String>,
    /// The federation's data schema.
    pub schema: Schema,
    /// The model.
    #[serde(default)]
    pub model: ModelSection,
    /// Training settings.
    #[serde(default)]
    pub training: TrainingSection,
    /// Aggregation strategy.
    #[serde(default)]
    pub strategy: StrategyConfig,
    /// Secure aggregation.
    #[serde(default)]
    pub secure_aggregation: SecureAggregationSection,
    /// Validation gate (see `cohort_coordinator::gate::GateConfig`): `primary_metric`, `min_primary`,
    /// `max_regression`, `min_slice`.
    #[serde(default)]
    pub gate: Option<toml::Table>,
    /// Optional central evaluation: a CSV with the federation schema, held by the coordinator. Every new
    /// version is also evaluated on it, and the result is recorded beside the federated metrics. Scaled with
    /// the schema's declared bounds (or, without them, with the test set's own statistics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub central_test_set: Option<PathBuf>,
    /// Who may connect and how much each connection may hold (revocation list, connection and stream limits).
    #[serde(default)]
    pub admission: AdmissionSection,
    /// How much one node can move the model and the gate: weighting, weight and share caps, update norm bound.
    #[serde(default)]
    pub influence: InfluenceSection,
}

/// The coordinator's `[admission]` section: the revocation list and the limits that bound what any admitted
/// peer can make the coordinator hold. Every field has a safe default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionSection {
    /// A file of revoked certificates (one node name or `sha256:<hex>` certificate fingerprint a line, `#`
    /// comments), re-read without a restart whenever it changes. See `cohort_core::admission`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_list: Option<PathBuf>,
    /// The most TLS connections open or in their handshake at once; further connections are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The most connections one node (one certificate name) may hold open at once.
    #[serde(default = "default_max_connections_per_node")]
    pub max_connections_per_node: usize,
    /// The most concurrent HTTP/2 streams (calls) on one connection; further streams are refused.
    #[serde(default = "default_max_streams_per_connection")]
    pub max_streams_per_connection: u32,
    /// How long a peer may take to complete its TLS handshake.
    #[serde(default = "default_handshake_timeout_secs")]
    pub handshake_timeout_secs: u64,
}

fn default_max_connections() -> usize {
    256
}

fn default_max_connections_per_node() -> usize {
    2
}

fn default_max_streams_per_connection() -> u32 {
    16
}

fn default_handshake_timeout_secs() -> u64 {
    10
}

impl Default for AdmissionSection {
    fn default() -> Self {
        Self {
            revocation_list: None,
            max_connections: default_max_connections(),
            max_connections_per_node: default_max_connections_per_node(),
            max_streams_per_connection: default_max_streams_per_connection(),
            handshake_timeout_secs: default_handshake_timeout_secs(),
        }
    }
}

impl AdmissionSection {
    /// Checks every limit is at least 1.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let limits = [
            ("max_connections", self.max_connections as u64),
            ("max_connections_per_node", self.max_connections_per_node as u64),
            ("max_streams_per_connection", u64::from(self.max_streams_per_connection)),
            ("handshake_timeout_secs", self.handshake_timeout_secs),
        ];
        match limits.iter().find(|(_, v)| *v == 0) {
            Some((field, _)) => Err(ConfigError::Invalid(format!("admission.{field} must be at least 1"))),
            None => Ok(()),
        }
    }
}

fn default_listen() -> String {
    "0.0.0.0:7443".into()
}

impl CoordinatorConfig {
    /// Reads and checks a coordinator config; relative paths are resolved against the file's directory.
    ///
    /// # Errors
    /// [`ConfigError`] when the file is unreadable, malformed or inconsistent.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = parse_file(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.tls.resolve(base);
        config.data_dir = resolve(base, &config.data_dir);
        config.central_test_set = config.central_test_set.map(|p| resolve(base, &p));
        config.admission.revocation_list = config.admission.revocation_list.map(|p| resolve(base, &p));
        config.validate()?;
        Ok(config)
    }

    /// Checks the values are consistent.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.schema.validate()?;
        if self.roster.is_empty() {
            return Err(ConfigError::Invalid("roster is empty: list the client names allowed to join".into()));
        }
        for name in &self.roster {
            crate::pki::check_name(name).map_err(|e| ConfigError::Invalid(format!("roster: {e}")))?;
        }
        self.admission.validate()?;
        self.influence.validate()?;
        if self.training.rounds == 0 {
            return Err(ConfigError::Invalid(
                "training.rounds = 0: the federation would train nothing; set training.rounds to at least 1".into(),
            ));
        }
        if self.training.min_clients == 0 {
            return Err(ConfigError::Invalid("training.min_clients must be at least 1".into()));
        }
        if self.training.min_clients > self.roster.len() {
            return Err(ConfigError::Invalid(format!(
                "training.min_clients = {} but the roster has only {} clients",
                self.training.min_clients,
                self.roster.len()
            )));
        }
        if !(self.training.learning_rate > 0.0 && self.training.learning_rate.is_finite()) {
            return Err(ConfigError::Invalid("training.learning_rate must be positive".into()));
        }
        if self.training.max_round_failures == 0 {
            return Err(ConfigError::Invalid(
                "training.max_round_failures = 0 would stop at the first failed round; set it to at least 1".into(),
            ));
        }
        self.secure_aggregation.validate()?;
        if let StrategyConfig::TrimmedMean { trim } = self.strategy
            && !(0.0..0.5).contains(&trim)
        {
            return Err(ConfigError::Invalid(format!(
                "strategy trim = {trim}: the fraction dropped at each end must be in [0, 0.5)"
            )));
        }
        self.model_spec().map(|_| ())
    }

    /// The model specification implied by the schema and the model section.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a zero hidden width.
    pub fn model_spec(&self) -> Result<ModelSpec, ConfigError> {
        ModelSpec::new(self.schema.features.len(), &self.model.hidden, self.schema.outputs(), self.schema.task)
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}

/// Where the coordinator is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorEndpoint {
    /// URL, e.g. `https://coordinator.example.org:7443`.
    pub url: String,
    /// Name to check in the coordinator's certificate (default: the URL's host).
    #[serde(default)]
    pub server_name: Option<String>,
}

impl CoordinatorEndpoint {
    /// Checks the URL's scheme: Cohort only talks to a coordinator over mutual TLS.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a URL that does not start with `https://`.
    pub fn check_url(&self) -> Result<(), ConfigError> {
        if self.url.trim_start().to_ascii_lowercase().starts_with("https://") {
            return Ok(());
        }
        Err(ConfigError::Invalid(format!(
            "coordinator.url = {:?}: the coordinator URL must start with https:// (Cohort always uses mutual TLS)",
            self.url
        )))
    }

    /// The TLS server name: `server_name`, or the URL's host.
    pub fn tls_name(&self) -> String {
        if let Some(name) = &self.server_name {
            return name.clone();
        }
        let rest = self.url.split("://").nth(1).unwrap_or(&self.url);
        let host_port = rest.split('/').next().unwrap_or(rest);
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h).trim_matches(['[', ']']).to_owned()
    }
}

/// The client's local data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// CSV file with a header row.
    pub path: PathBuf,
    /// Fraction of rows held out for evaluation.
    #[serde(default = "default_holdout")]
    pub holdout_fraction: f64,
    /// Seed of the (non-secret) train/held-out split, so the split is stable across restarts.
    #[serde(default)]
    pub split_seed: u64,
}

fn default_holdout() -> f64 {
    0.2
}

/// The client's differential-privacy settings. The client enforces its own budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySection {
    /// Whether DP-SGD is on.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Total ε this node will spend over the whole federation, all mechanisms included.
    #[serde(default = "default_budget")]
    pub epsilon_budget: f64,
    /// δ of the guarantee.
    #[serde(default = "default_delta")]
    pub delta: f64,
    /// Per-example clipping norm C.
    #[serde(default = "default_clip")]
    pub clip_norm: f64,
    /// Noise multiplier σ. When absent, σ is calibrated so the planned rounds spend `target_epsilon`.
    #[serde(default)]
    pub noise_multiplier: Option<f64>,
    /// ε the planned rounds of DP-SGD should spend (default: 90% of the budget, leaving room for small releases).
    #[serde(default)]
    pub target_epsilon: Option<f64>,
    /// Poisson sampling rate q (default: batch size / training rows).
    #[serde(default)]
    pub sample_rate: Option<f64>,
    /// ε of each small OpenDP release (example count, label histogram).
    #[serde(default = "default_release_epsilon")]
    pub release_epsilon: f64,
    /// ε of the DP feature statistics checked against the schema's declared `bounds` before training (off when
    /// absent). The statistics are split over four releases per column, so they need a few units of ε and a few
    /// thousand rows to say anything; a smaller ε buys only noise.
    #[serde(default)]
    pub feature_stats_epsilon: Option<f64>,
    /// ε of each DP evaluation of a global model version (a noisy confusion matrix of the held-out rows), the
    /// only evaluation that leaves the node. Default: [`DEFAULT_EVALUATION_SHARE`] of the budget spread over the
    /// federation's rounds.
    #[serde(default)]
    pub evaluation_epsilon: Option<f64>,
}

/// The share of the budget the planned DP-SGD rounds spend when neither `target_epsilon` nor
/// `noise_multiplier` is set; the rest is left for the evaluations and the OpenDP join releases.
pub const DEFAULT_DP_SGD_SHARE: f64 = 0.8;

/// The share of the budget all DP evaluations spend together when `evaluation_epsilon` is not set.
pub const DEFAULT_EVALUATION_SHARE: f64 = 0.1;

impl PrivacySection {
    /// The ε the planned DP-SGD rounds aim at: `target_epsilon`, or [`DEFAULT_DP_SGD_SHARE`] of the budget
    /// (None when σ is fixed by `noise_multiplier`, so the spend is whatever σ gives).
    pub fn dp_sgd_target(&self) -> Option<f64> {
        match (self.target_epsilon, self.noise_multiplier) {
            (Some(target), _) => Some(target),
            (None, None) => Some(self.epsilon_budget * DEFAULT_DP_SGD_SHARE),
            (None, Some(_)) => None,
        }
    }

    /// The ε of each DP evaluation in a federation of `rounds` rounds: `evaluation_epsilon`, or
    /// [`DEFAULT_EVALUATION_SHARE`] of the budget over the rounds.
    pub fn evaluation_epsilon_for(&self, rounds: u64) -> f64 {
        self.evaluation_epsilon.unwrap_or(self.epsilon_budget * DEFAULT_EVALUATION_SHARE / rounds.max(1) as f64)
    }

    /// [`PrivacySection::check_shares_for`] with the default evaluation share (a config read before the
    /// federation's round count is known; an explicit `evaluation_epsilon` is checked when the node joins).
    ///
    /// # Errors
    /// As [`PrivacySection::check_shares_for`].
    pub fn check_shares(&self) -> Result<(), ConfigError> {
        self.check_shares_for(None)
    }

    /// Checks that the planned shares fit the budget: the DP-SGD target, up to two join releases (count and
    /// label histogram), the feature statistics and one evaluation per round (of `rounds`, when known). Their
    /// plain sum bounds their composition, so a config that passes cannot overspend by design; one that fails
    /// names the keys to change.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the keys and their values.
    pub fn check_shares_for(&self, rounds: Option<u64>) -> Result<(), ConfigError> {
        let mut parts = Vec::new();
        let mut total = 0.0;
        if let Some(target) = self.dp_sgd_target() {
            let key = if self.target_epsilon.is_some() {
                "privacy.target_epsilon"
            } else {
                "the default DP-SGD share (80% of the budget)"
            };
            parts.push(format!("{key} {target}"));
            total += target;
        }
        parts.push(format!("2 × privacy.release_epsilon {}", self.release_epsilon));
        total += 2.0 * self.release_epsilon;
        if let Some(stats) = self.feature_stats_epsilon {
            parts.push(format!("privacy.feature_stats_epsilon {stats}"));
            total += stats;
        }
        match (self.evaluation_epsilon, rounds) {
            (Some(each), Some(rounds)) => {
                parts.push(format!("{rounds} rounds × privacy.evaluation_epsilon {each}"));
                total += each * rounds as f64;
            }
            (None, _) => {
                let all = self.epsilon_budget * DEFAULT_EVALUATION_SHARE;
                parts.push(format!("the default evaluation share (10% of the budget) {all}"));
                total += all;
            }
            (Some(_), None) => {}
        }
        // A relative slack of 1e-9 absorbs the rounding of the default split itself (0.9·ε + 0.1·ε).
        if total > self.epsilon_budget * (1.0 + 1e-9) {
            return Err(ConfigError::Invalid(format!(
                "the privacy shares do not fit privacy.epsilon_budget = {}: {} = {total}; lower one of them or raise the \
                 budget",
                self.epsilon_budget,
                parts.join(" + ")
            )));
        }
        Ok(())
    }
}

fn default_true() -> bool {
    true
}
fn default_budget() -> f64 {
    3.0
}
fn default_delta() -> f64 {
    1e-5
}
fn default_clip() -> f64 {
    1.0
}
fn default_release_epsilon() -> f64 {
    0.05
}

impl Default for PrivacySection {
    fn default() -> Self {
        Self {
            enabled: true,
            epsilon_budget: default_budget(),
            delta: default_delta(),
            clip_norm: default_clip(),
            noise_multiplier: None,
            target_epsilon: None,
            sample_rate: None,
            release_epsilon: default_release_epsilon(),
            feature_stats_epsilon: None,
            evaluation_epsilon: None,
        }
    }
}

/// A client node's configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// This node's name; must equal the CN of its certificate.
    pub name: String,
    /// The federation to join.
    pub federation_id: String,
    /// The coordinator.
    pub coordinator: CoordinatorEndpoint,
    /// TLS material of this node.
    pub tls: TlsSection,
    /// Local data.
    pub data: DataSection,
    /// Directory for the node's ledger and keys.
    pub data_dir: PathBuf,
    /// Differential privacy.
    #[serde(default)]
    pub privacy: PrivacySection,
    /// The weakest secure aggregation this node accepts (default: required, safe against the coordinator plus
    /// one colluding hospital).
    #[serde(default)]
    pub secure_aggregation: ClientSecureAggregation,
}

impl ClientConfig {
    /// Reads and checks a client config; relative paths are resolved against the file's directory.
    ///
    /// # Errors
    /// [`ConfigError`] when the file is unreadable, malformed or inconsistent.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = parse_file(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.tls.resolve(base);
        config.data.path = resolve(base, &config.data.path);
        config.data_dir = resolve(base, &config.data_dir);
        config.validate()?;
        Ok(config)
    }

    /// Checks the values are consistent.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::pki::check_name(&self.name).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.coordinator.check_url()?;
        if !(0.0..1.0).contains(&self.data.holdout_fraction) {
            return Err(ConfigError::Invalid("data.holdout_fraction must be in [0, 1)".into()));
        }
        let s = &self.secure_aggregation;
        if s.min_participants < s.max_colluders + 2 {
            return Err(ConfigError::Invalid(format!(
                "secure_aggregation.min_participants = {} must be at least max_colluders + 2 = {}",
                s.min_participants,
                s.max_colluders + 2
            )));
        }
        let p = &self.privacy;
        if p.enabled {
            if !(p.epsilon_budget > 0.0 && p.epsilon_budget.is_finite()) {
                return Err(ConfigError::Invalid("privacy.epsilon_budget must be positive".into()));
            }
            if !(p.delta > 0.0 && p.delta < 1.0) {
                return Err(ConfigError::Invalid("privacy.delta must be in (0, 1)".into()));
            }
            if !(p.clip_norm > 0.0 && p.clip_norm.is_finite()) {
                return Err(ConfigError::Invalid("privacy.clip_norm must be positive".into()));
            }
            if p.sample_rate.is_some_and(|q| !(q > 0.0 && q <= 1.0)) {
                return Err(ConfigError::Invalid("privacy.sample_rate must be in (0, 1]".into()));
            }
            if p.noise_multiplier.is_some_and(|s| !(s > 0.0 && s.is_finite())) {
                return Err(ConfigError::Invalid("privacy.noise_multiplier must be positive".into()));
            }
            p.check_shares()?;
        }
        Ok(())
    }
}

/// The federation plan a client receives when it joins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FederationPlan {
    /// Federation identifier.
    pub federation_id: String,
    /// Model name in the registry.
    pub model_name: String,
    /// The data schema every client must match.
    pub schema: Schema,
    /// The model architecture.
    pub model: ModelSpec,
    /// Training settings.
    pub training: TrainingSection,
    /// Strategy (clients read the FedProx coefficient from it).
    pub strategy: StrategyConfig,
    /// Secure aggregation settings.
    pub secure_aggregation: SecureAggregationSection,
    /// The influence bounds (clients clip their updates to `max_update_norm`).
    pub influence: InfluenceSection,
}

impl FederationPlan {
    /// The FedProx proximal coefficient, if the strategy has one.
    pub fn proximal_mu(&self) -> Option<f64> {
        match self.strategy {
            StrategyConfig::Fedprox { mu } => Some(mu),
            _ => None,
        }
    }
}

fn parse_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_owned() } else { base.join(p) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COORDINATOR: &str = r#"
federation_id = "demo"
data_dir = "data"
roster = ["a", "b"]
[tls]
ca_cert = "pki/ca.pem"
cert = "pki/cert.pem"
key = "pki/key.pem"
[schema]
features = ["x1", "x2"]
label = "y"
task = "binary"
[strategy]
name = "fedprox"
mu = 0.5
"#;

    #[test]
    fn coordinator_config_parses_with_defaults_and_resolves_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, COORDINATOR).unwrap();
        let c = CoordinatorConfig::load(&path).unwrap();
        assert_eq!(c.training.rounds, 10);
        assert_eq!(c.strategy, StrategyConfig::Fedprox { mu: 0.5 });
        assert_eq!(c.tls.ca_cert, dir.path().join("pki/ca.pem"));
        assert_eq!(c.model_spec().unwrap().layers, vec![2, 2]);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, COORDINATOR.replace("roster", "rooster")).unwrap();
        let err = CoordinatorConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("rooster"), "{err}");
        std::fs::write(&path, COORDINATOR.replace("[\"a\", \"b\"]", "[]")).unwrap();
        let err = CoordinatorConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("roster is empty"), "{err}");
    }

    #[test]
    fn privacy_shares_that_cannot_fit_the_budget_are_named() {
        let base = PrivacySection::default();
        base.check_shares().unwrap();
        let err =
            PrivacySection { feature_stats_epsilon: Some(5.0), ..base.clone() }.check_shares().unwrap_err().to_string();
        assert!(err.contains("privacy.feature_stats_epsilon 5") && err.contains("privacy.epsilon_budget = 3"), "{err}");
        let err = PrivacySection { target_epsilon: Some(2.95), ..base.clone() }.check_shares().unwrap_err().to_string();
        assert!(err.contains("privacy.target_epsilon 2.95") && err.contains("release_epsilon"), "{err}");
        // An explicit evaluation ε is checked against the federation's rounds once they are known.
        let per_round = PrivacySection { evaluation_epsilon: Some(0.05), ..base.clone() };
        per_round.check_shares_for(Some(10)).unwrap();
        let err = per_round.check_shares_for(Some(100)).unwrap_err().to_string();
        assert!(err.contains("100 rounds × privacy.evaluation_epsilon 0.05"), "{err}");
        // With σ fixed there is no DP-SGD target to check; the releases alone must fit.
        PrivacySection { noise_multiplier: Some(1.0), target_epsilon: None, ..base.clone() }.check_shares().unwrap();
        let err =
            PrivacySection { noise_multiplier: Some(1.0), release_epsilon: 2.0, ..base }.check_shares().unwrap_err();
        assert!(err.to_string().contains("2 × privacy.release_epsilon 2"), "{err}");
    }

    #[test]
    fn zero_rounds_is_a_config_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, format!("{COORDINATOR}[training]\nrounds = 0\n")).unwrap();
        let err = CoordinatorConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("training.rounds = 0") && err.contains("at least 1"), "{err}");
        std::fs::write(&path, format!("{COORDINATOR}[training]\nrounds = 1\n")).unwrap();
        assert_eq!(CoordinatorConfig::load(&path).unwrap().training.rounds, 1);
    }

    #[test]
    fn a_multiclass_schema_without_classes_says_the_key_is_missing() {
        let schema = |classes| Schema {
            features: vec!["x".into()],
            label: "y".into(),
            task: TaskKind::Multiclass,
            classes,
            bounds: None,
            label_bounds: None,
        };
        let err = schema(None).validate().unwrap_err().to_string();
        assert!(err.contains("schema.classes is missing: a multiclass task needs the number of classes"), "{err}");
        let err = schema(Some(1)).validate().unwrap_err().to_string();
        assert!(err.contains("schema.classes = 1") && err.contains("at least 2"), "{err}");
        schema(Some(3)).validate().unwrap();
    }

    #[test]
    fn a_plain_http_coordinator_url_is_refused() {
        for url in ["http://coord.example:7443", "coord.example:7443", "grpc://coord.example"] {
            let e = CoordinatorEndpoint { url: url.into(), server_name: None };
            let err = e.check_url().unwrap_err().to_string();
            assert!(
                err.contains("the coordinator URL must start with https:// (Cohort always uses mutual TLS)"),
                "{err}"
            );
            assert!(err.contains(url), "{err}");
        }
        CoordinatorEndpoint { url: "https://coord.example:7443".into(), server_name: None }.check_url().unwrap();
    }

    #[test]
    fn tls_name_defaults_to_url_host() {
        let e = CoordinatorEndpoint { url: "https://coord.example:7443".into(), server_name: None };
        assert_eq!(e.tls_name(), "coord.example");
        let e = CoordinatorEndpoint { url: "https://[::1]:7443".into(), server_name: None };
        assert_eq!(e.tls_name(), "::1");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn shipped_example_configs_load() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let c = CoordinatorConfig::load(&examples.join("coordinator.toml")).unwrap();
        assert_eq!(c.model_spec().unwrap().layers, vec![30, 2]);
        let k = ClientConfig::load(&examples.join("client.toml")).unwrap();
        assert_eq!(k.federation_id, c.federation_id);
        assert!(c.roster.contains(&k.name));
    }
}

//! The versioned model registry: lineage, stages, gate decisions, round checkpoints and export.
//!
//! Layout of a data directory:
//! - `<data_dir>/registry.sqlite3` — the embedded SQLite store (WAL journal, `synchronous = FULL`), schema version
//!   [`SCHEMA_VERSION`] in `PRAGMA user_version`;
//! - `<data_dir>/artifacts/<sha256-hex>` — content-addressed model artifacts (the little-endian `f32` parameter
//!   bytes of [`cohort_core::model::parameters_to_bytes`]), written to a temporary file and renamed, and checked
//!   against their name on every read.
//!
//! Guarantees:
//! - version numbers increase monotonically per model name (allocated inside a write transaction; versions are
//!   never deleted);
//! - registering the same `(name, round)` twice returns the first registration and adds nothing (a restarted
//!   coordinator may safely re-register its last round);
//! - [`Registry::register_round`] writes the version and the federation's checkpoint in one transaction, and the
//!   artifact file exists before that transaction commits, so a crash (even SIGKILL) leaves either both or
//!   neither, and never a version whose artifact is missing (an orphan artifact file is harmless);
//! - every stage change is a row of `stage_events` with who, when and why; every gate decision is a row of
//!   `gate_decisions` with its reasons and the gate config.
//!
//! Stages: a new version is a `candidate`. [`Registry::promote`] makes it `production` and archives the previous
//! production version. [`Registry::rollback`] archives the production version and restores the one that was in
//! production before it (production history is a stack: promotions push, rollbacks pop).

use crate::gate::{GateConfig, GateDecision};
use cohort_core::Round;
use cohort_core::metrics::EvalMetrics;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The registry's SQLite schema version, stored in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// File name of the SQLite store inside the data directory.
pub const DB_FILE: &str = "registry.sqlite3";

/// Directory of the content-addressed artifacts inside the data directory.
pub const ARTIFACTS_DIR: &str = "artifacts";

/// Value of [`ExportDocument::format`].
pub const EXPORT_FORMAT: &str = "cohort-model";

/// Value of [`ExportDocument::format_version`].
pub const EXPORT_FORMAT_VERSION: u32 = 1;

/// Errors of the registry, grouped by blame: storage, caller input, and the state of the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A file or directory could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The SQLite store failed.
    #[error("registry database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored or exported JSON document could not be (de)serialized.
    #[error("registry JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The store was written by a newer Cohort.
    #[error("registry schema version {found} is newer than the supported version {supported}")]
    SchemaTooNew {
        /// Version found in the file.
        found: i64,
        /// Version this build supports.
        supported: i64,
    },
    /// No such model or version.
    #[error("model {name:?} {} not found", version.map_or_else(|| "(any version)".to_owned(), |v| v.to_string()))]
    NotFound {
        /// Model name.
        name: String,
        /// Version, if one was asked for.
        version: Option<Version>,
    },
    /// An artifact file that should exist does not.
    #[error("artifact {sha256} is missing from the artifact store")]
    MissingArtifact {
        /// Expected SHA-256.
        sha256: String,
    },
    /// An artifact whose content does not match its name: the file was altered or damaged.
    #[error("artifact {expected} is corrupt: its content hashes to {actual}")]
    CorruptArtifact {
        /// The SHA-256 the file is named by.
        expected: String,
        /// The SHA-256 of its content.
        actual: String,
    },
    /// A stage change that is not allowed (e.g. promoting the production version).
    #[error("model {name:?} {version} is {from}; it cannot become {to}")]
    InvalidTransition {
        /// Model name.
        name: String,
        /// Version.
        version: Version,
        /// Its current stage.
        from: Stage,
        /// The requested stage.
        to: Stage,
    },
    /// Rollback asked for a model with no production version.
    #[error("model {0:?} has no production version to roll back")]
    NoProduction(String),
    /// Rollback asked for a model whose production version has no predecessor.
    #[error("model {name:?} {current} is the first production version; there is nothing to roll back to")]
    NothingToRollBack {
        /// Model name.
        name: String,
        /// Its production version.
        current: Version,
    },
    /// A checkpoint older than the one stored.
    #[error("federation {federation:?} already has a checkpoint at round {stored}; refusing round {offered}")]
    StaleCheckpoint {
        /// Federation id.
        federation: String,
        /// Round of the stored checkpoint.
        stored: Round,
        /// Round offered.
        offered: Round,
    },
    /// Caller input that cannot be stored (bad fingerprint, non-finite metric, unknown parent, ...).
    #[error("invalid registry input: {0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, RegistryError>;

/// A registry version number: 1, 2, 3, ... per model name. Not the same quantity as a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version(pub u64);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl FromStr for Version {
    type Err = RegistryError;

    /// Parses `"3"` or `"v3"`.
    fn from_str(s: &str) -> Result<Self> {
        let digits = s.strip_prefix('v').unwrap_or(s);
        digits
            .parse::<u64>()
            .ok()
            .filter(|&v| v > 0)
            .map(Version)
            .ok_or_else(|| RegistryError::Invalid(format!("{s:?} is not a version (expected e.g. 3 or v3)")))
    }
}

/// The lifecycle stage of a model version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Registered, not (yet) released.
    Candidate,
    /// The released version; at most one per model name.
    Production,
    /// Formerly production (replaced or rolled back).
    Archived,
}

impl Stage {
    /// The stage's name as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Candidate => "candidate",
            Self::Production => "production",
            Self::Archived => "archived",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "candidate" => Ok(Self::Candidate),
            "production" => Ok(Self::Production),
            "archived" => Ok(Self::Archived),
            other => Err(RegistryError::Invalid(format!("unknown stage {other:?}"))),
        }
    }
}

/// A client's cumulative privacy spend as it went into a version.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrivacySpend {
    /// ε spent so far (≥ 0).
    pub epsilon: f64,
    /// δ of the guarantee (in \[0, 1\]).
    pub delta: f64,
}

/// Everything the coordinator knows about a new model version. Items that belong to the coordinator's run
/// (hyperparameters, secure-aggregation parameters, preprocessing statistics, schema, model spec) are free-form
/// JSON and are stored and exported verbatim.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NewVersion {
    /// Model name (the lineage key; versions are numbered per name). Non-empty.
    pub name: String,
    /// The round that produced this version.
    pub round: Round,
    /// The version this one was trained from, if it is registered.
    pub parent: Option<Version>,
    /// Clients whose updates went into the model (stored sorted, without duplicates).
    pub clients: Vec<String>,
    /// Aggregation strategy name (e.g. `fedavg`).
    pub strategy: String,
    /// Strategy and training hyperparameters.
    pub hyperparameters: Value,
    /// Hash of the coordinator config that produced the run.
    pub config_hash: String,
    /// Each client's data fingerprint: SHA-256 (64 lowercase hex digits) of its schema and row count.
    pub data_fingerprints: BTreeMap<String, String>,
    /// Example-weighted evaluation metrics (None when no client evaluated).
    pub metrics: Option<EvalMetrics>,
    /// Per-client evaluation metrics.
    pub slices: BTreeMap<String, EvalMetrics>,
    /// Metrics of the coordinator's central evaluation (None when it has no test set).
    pub central: Option<EvalMetrics>,
    /// Each client's cumulative privacy spend.
    pub privacy: BTreeMap<String, PrivacySpend>,
    /// Secure-aggregation parameters (JSON; `null` when off).
    pub secure_aggregation: Value,
    /// Preprocessing statistics, e.g. `{"mean": [...], "std": [...]}` per feature.
    pub preprocessing: Value,
    /// Data schema: feature names, label, task, classes.
    pub schema: Value,
    /// Model specification: layer sizes and task.
    pub model_spec: Value,
}

/// The lineage details of a version, stored as one JSON column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Details {
    clients: Vec<String>,
    strategy: String,
    hyperparameters: Value,
    config_hash: String,
    data_fingerprints: BTreeMap<String, String>,
    metrics: Option<EvalMetrics>,
    slices: BTreeMap<String, EvalMetrics>,
    #[serde(default)]
    central: Option<EvalMetrics>,
    privacy: BTreeMap<String, PrivacySpend>,
    secure_aggregation: Value,
    preprocessing: Value,
    schema: Value,
    model_spec: Value,
}

/// A registered model version. Its JSON form (used by `cohort models list --json`) has at least `name`,
/// `version`, `stage`, `sha256`, `parent`, `metrics` and `clients`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: Version,
    /// Current stage.
    pub stage: Stage,
    /// SHA-256 of the artifact (lowercase hex).
    pub sha256: String,
    /// Artifact size in bytes.
    pub size_bytes: u64,
    /// Parent version.
    pub parent: Option<Version>,
    /// Round that produced it.
    pub round: Round,
    /// Participating clients, sorted.
    pub clients: Vec<String>,
    /// Aggregate evaluation metrics.
    pub metrics: Option<EvalMetrics>,
    /// Per-client evaluation metrics.
    pub slices: BTreeMap<String, EvalMetrics>,
    /// Metrics of the coordinator's central evaluation, if it has a test set.
    #[serde(default)]
    pub central: Option<EvalMetrics>,
    /// When it was registered (RFC 3339, UTC).
    pub created_at: String,
    /// When it was registered (milliseconds since the Unix epoch).
    pub created_unix_ms: i64,
    /// Aggregation strategy.
    pub strategy: String,
    /// Hyperparameters.
    pub hyperparameters: Value,
    /// Config hash.
    pub config_hash: String,
    /// Data fingerprints per client.
    pub data_fingerprints: BTreeMap<String, String>,
    /// Privacy spend per client.
    pub privacy: BTreeMap<String, PrivacySpend>,
    /// Secure-aggregation parameters.
    pub secure_aggregation: Value,
    /// Preprocessing statistics.
    pub preprocessing: Value,
    /// Data schema.
    pub schema: Value,
    /// Model specification.
    pub model_spec: Value,
}

impl VersionRecord {
    /// The version's evaluation as the gate consumes it: the coordinator's central test set when it has one
    /// (exact figures on its own rows), else the hospitals' pooled metrics (DP releases under DP, noisy on small
    /// held-out sets); the hospitals' slices either way. None when neither exists.
    pub fn evaluation(&self) -> Option<cohort_core::metrics::FederatedEval> {
        self.central
            .clone()
            .or_else(|| self.metrics.clone())
            .map(|aggregate| cohort_core::metrics::FederatedEval { aggregate, slices: self.slices.clone() })
    }
}

/// One stage change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageEvent {
    /// Sequence number (increasing).
    pub id: i64,
    /// Model name.
    pub name: String,
    /// Version.
    pub version: Version,
    /// Stage before (None at registration).
    pub from: Option<Stage>,
    /// Stage after.
    pub to: Stage,
    /// What caused it: `register`, `promote`, `gate` or `rollback`.
    pub action: String,
    /// Who: a user name, `gate` or `coordinator`.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// When (RFC 3339, UTC).
    pub at: String,
}

/// One recorded gate decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateRecord {
    /// Sequence number.
    pub id: i64,
    /// Model name.
    pub name: String,
    /// The candidate version.
    pub version: Version,
    /// The production version it was compared with.
    pub compared_with: Option<Version>,
    /// The decision and its reasons.
    pub decision: GateDecision,
    /// The gate config applied.
    pub config: GateConfig,
    /// When (RFC 3339, UTC).
    pub at: String,
}

/// A version with its stage history and gate decisions (`cohort models show`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionDetails {
    /// The version.
    #[serde(flatten)]
    pub record: VersionRecord,
    /// Its stage changes, oldest first.
    pub stage_events: Vec<StageEvent>,
    /// Its gate decisions, oldest first.
    pub gate_decisions: Vec<GateRecord>,
}

/// A federation's last completed round, from which a restarted coordinator resumes.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Federation id.
    pub federation: String,
    /// Last completed round.
    pub round: Round,
    /// SHA-256 of the model artifact.
    pub sha256: String,
    /// The model bytes (verified against `sha256`).
    pub model_bytes: Vec<u8>,
    /// The strategy's state (e.g. FedAdam moments), as saved.
    pub strategy_state: Value,
    /// The registered version of this round, when it was saved by [`Registry::register_round`].
    pub version: Option<(String, Version)>,
    /// When it was saved (RFC 3339, UTC).
    pub saved_at: String,
}

/// Change of one metric between two versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricDelta {
    /// Value in the first version.
    pub a: Option<f64>,
    /// Value in the second version.
    pub b: Option<f64>,
    /// `b - a` when both exist.
    pub delta: Option<f64>,
}

/// Change of one JSON leaf (hyperparameter) between two versions, at a dotted path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueChange {
    /// Dotted path, e.g. `training.lr`; `$` for a non-object root.
    pub path: String,
    /// Value in the first version (None: absent).
    pub a: Option<Value>,
    /// Value in the second version (None: absent).
    pub b: Option<Value>,
}

/// Differences between two versions (`cohort models diff`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionDiff {
    /// First version, as `name vN`.
    pub a: String,
    /// Second version.
    pub b: String,
    /// Aggregate metric changes, for every metric in either version.
    pub metrics: BTreeMap<String, MetricDelta>,
    /// Per-client metric changes, for every client with a slice in either version.
    pub slices: BTreeMap<String, BTreeMap<String, MetricDelta>>,
    /// Strategy change `(a, b)`, if the strategy differs.
    pub strategy: Option<(String, String)>,
    /// Hyperparameter leaves that differ.
    pub hyperparameters: Vec<ValueChange>,
    /// Clients in `b` but not in `a`.
    pub clients_added: Vec<String>,
    /// Clients in `a` but not in `b`.
    pub clients_removed: Vec<String>,
    /// Privacy spend changes `(a, b)` for clients whose spend differs.
    pub privacy: BTreeMap<String, (Option<PrivacySpend>, Option<PrivacySpend>)>,
    /// Whether the config hashes differ.
    pub config_hash_changed: bool,
    /// Whether the weights differ (different artifact hash).
    pub weights_changed: bool,
}

/// The weights inside an [`ExportDocument`].
///
/// Encoding choice: a JSON array of `f32` numbers rather than base64, so the file is readable by any JSON
/// parser without a second decoding step. serde_json prints each `f32` in its shortest round-tripping form, so
/// parsing the numbers back as `f32` gives the exact bits; `sha256` (of the little-endian bytes) lets a consumer
/// check that.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedWeights {
    /// Always `"f32-array"`.
    pub encoding: String,
    /// The parameter layout.
    pub layout: String,
    /// Number of parameters.
    pub count: usize,
    /// SHA-256 (hex) of the parameters as little-endian `f32` bytes: the registry artifact hash.
    pub sha256: String,
    /// The parameters.
    pub values: Vec<f32>,
}

/// Lineage, evaluation and privacy metadata inside an [`ExportDocument`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportMetadata {
    /// Round that produced the version.
    pub round: Round,
    /// Parent version.
    pub parent: Option<Version>,
    /// Ancestors, nearest first (parent, grandparent, ...).
    pub ancestors: Vec<Version>,
    /// Registration time.
    pub created_at: String,
    /// Participating clients.
    pub clients: Vec<String>,
    /// Strategy.
    pub strategy: String,
    /// Hyperparameters.
    pub hyperparameters: Value,
    /// Config hash.
    pub config_hash: String,
    /// Data fingerprints per client.
    pub data_fingerprints: BTreeMap<String, String>,
    /// Aggregate metrics.
    pub metrics: Option<EvalMetrics>,
    /// Per-client metrics.
    pub slices: BTreeMap<String, EvalMetrics>,
    /// Central evaluation metrics.
    #[serde(default)]
    pub central: Option<EvalMetrics>,
    /// Privacy spend per client.
    pub privacy: BTreeMap<String, PrivacySpend>,
    /// Secure-aggregation parameters.
    pub secure_aggregation: Value,
    /// Stage history.
    pub stage_events: Vec<StageEvent>,
}

/// A self-describing export of one version: everything needed to serve it with exactly the training
/// preprocessing (one JSON document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportDocument {
    /// Always [`EXPORT_FORMAT`].
    pub format: String,
    /// Always [`EXPORT_FORMAT_VERSION`].
    pub format_version: u32,
    /// Model name.
    pub name: String,
    /// Version.
    pub version: Version,
    /// Stage at export time.
    pub stage: Stage,
    /// The weights.
    pub weights: ExportedWeights,
    /// Model specification (layer sizes, task).
    pub model_spec: Value,
    /// Data schema (feature names, label, task, classes).
    pub schema: Value,
    /// Preprocessing statistics (per-feature mean and standard deviation).
    pub preprocessing: Value,
    /// Lineage, metrics and privacy.
    pub metadata: ExportMetadata,
}

impl ExportDocument {
    /// Reads an exported file.
    ///
    /// # Errors
    /// [`RegistryError::Io`] or [`RegistryError::Json`]; [`RegistryError::Invalid`] for another format.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| io("reading", path, source))?;
        let doc: Self = serde_json::from_str(&text)?;
        if doc.format != EXPORT_FORMAT || doc.format_version != EXPORT_FORMAT_VERSION {
            return Err(RegistryError::Invalid(format!(
                "{} is format {} v{}, expected {EXPORT_FORMAT} v{EXPORT_FORMAT_VERSION}",
                path.display(),
                doc.format,
                doc.format_version
            )));
        }
        Ok(doc)
    }

    /// Checks the weights against their recorded hash and count.
    ///
    /// # Errors
    /// [`RegistryError::CorruptArtifact`] when the values do not hash to `weights.sha256`;
    /// [`RegistryError::Invalid`] when the count disagrees.
    pub fn verify_weights(&self) -> Result<()> {
        if self.weights.values.len() != self.weights.count {
            return Err(RegistryError::Invalid(format!(
                "export lists {} weights but contains {}",
                self.weights.count,
                self.weights.values.len()
            )));
        }
        let actual = cohort_core::model::parameters_sha256(&self.weights.values);
        if actual != self.weights.sha256 {
            return Err(RegistryError::CorruptArtifact { expected: self.weights.sha256.clone(), actual });
        }
        Ok(())
    }
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> RegistryError {
    RegistryError::Io { action, path: path.to_owned(), source }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Content-addressed artifact files: `<dir>/<sha256-hex>`.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    dir: PathBuf,
}

impl ArtifactStore {
    /// Opens (creating if needed) the store at `dir`.
    ///
    /// # Errors
    /// [`RegistryError::Io`] when the directory cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| io("creating", &dir, source))?;
        Ok(Self { dir })
    }

    /// The file an artifact lives in.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] when `sha256` is not 64 lowercase hex digits (so no path can escape the store).
    pub fn path(&self, sha256: &str) -> Result<PathBuf> {
        if !is_sha256_hex(sha256) {
            return Err(RegistryError::Invalid(format!("{sha256:?} is not a lowercase hex SHA-256")));
        }
        Ok(self.dir.join(sha256))
    }

    /// Stores `bytes` and returns their SHA-256. Writes to a temporary file, syncs it, renames it into place and
    /// syncs the directory, so the named file is complete or absent. An existing intact file is kept; a corrupt
    /// one is replaced.
    ///
    /// # Errors
    /// [`RegistryError::Io`].
    pub fn put(&self, bytes: &[u8]) -> Result<String> {
        use std::io::Write;
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);

        let sha = sha256_hex(bytes);
        let path = self.path(&sha)?;
        if let Ok(existing) = std::fs::read(&path)
            && sha256_hex(&existing) == sha
        {
            return Ok(sha);
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!(".tmp-{sha}-{}-{n}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            io("writing artifact", &path, source)
        })?;
        Ok(sha)
    }

    /// Reads an artifact and checks that it hashes to its name.
    ///
    /// # Errors
    /// [`RegistryError::MissingArtifact`], [`RegistryError::CorruptArtifact`], [`RegistryError::Io`].
    pub fn get(&self, sha256: &str) -> Result<Vec<u8>> {
        let path = self.path(sha256)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RegistryError::MissingArtifact { sha256: sha256.to_owned() });
            }
            Err(source) => return Err(io("reading artifact", &path, source)),
        };
        let actual = sha256_hex(&bytes);
        if actual != sha256 {
            return Err(RegistryError::CorruptArtifact { expected: sha256.to_owned(), actual });
        }
        Ok(bytes)
    }
}

/// Milliseconds since the Unix epoch, now.
fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// RFC 3339 UTC timestamp with milliseconds, from Unix milliseconds (proleptic Gregorian calendar; days to
/// civil date by H. Hinnant's `civil_from_days`).
pub fn rfc3339_utc(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let ms = unix_ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", sod / 3600, sod % 3600 / 60, sod % 60)
}

fn to_i64(what: &str, v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| RegistryError::Invalid(format!("{what} {v} is too large")))
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS model_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version > 0),
    round INTEGER NOT NULL,
    parent INTEGER,
    stage TEXT NOT NULL CHECK (stage IN ('candidate', 'production', 'archived')),
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    created_unix_ms INTEGER NOT NULL,
    details TEXT NOT NULL,
    PRIMARY KEY (name, version),
    UNIQUE (name, round)
);
CREATE UNIQUE INDEX IF NOT EXISTS one_production_per_name ON model_versions (name) WHERE stage = 'production';
CREATE TABLE IF NOT EXISTS stage_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    from_stage TEXT,
    to_stage TEXT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_unix_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS stage_events_by_version ON stage_events (name, version);
CREATE TABLE IF NOT EXISTS gate_decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    compared_with INTEGER,
    promote INTEGER NOT NULL,
    reasons TEXT NOT NULL,
    config TEXT NOT NULL,
    at_unix_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    federation TEXT PRIMARY KEY,
    round INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    strategy_state TEXT NOT NULL,
    model_name TEXT,
    model_version INTEGER,
    saved_unix_ms INTEGER NOT NULL
);
";

const VERSION_COLUMNS: &str = "name, version, round, parent, stage, sha256, size_bytes, created_unix_ms, details";

/// A version row before its JSON is parsed.
struct RawVersion {
    name: String,
    version: i64,
    round: i64,
    parent: Option<i64>,
    stage: String,
    sha256: String,
    size_bytes: i64,
    created_unix_ms: i64,
    details: String,
}

impl RawVersion {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            name: row.get(0)?,
            version: row.get(1)?,
            round: row.get(2)?,
            parent: row.get(3)?,
            stage: row.get(4)?,
            sha256: row.get(5)?,
            size_bytes: row.get(6)?,
            created_unix_ms: row.get(7)?,
            details: row.get(8)?,
        })
    }

    fn parse(self) -> Result<VersionRecord> {
        let d: Details = serde_json::from_str(&self.details)?;
        Ok(VersionRecord {
            name: self.name,
            version: Version(to_u64(self.version)),
            stage: self.stage.parse()?,
            sha256: self.sha256,
            size_bytes: to_u64(self.size_bytes),
            parent: self.parent.map(|p| Version(to_u64(p))),
            round: Round(to_u64(self.round)),
            clients: d.clients,
            metrics: d.metrics,
            slices: d.slices,
            central: d.central,
            created_at: rfc3339_utc(self.created_unix_ms),
            created_unix_ms: self.created_unix_ms,
            strategy: d.strategy,
            hyperparameters: d.hyperparameters,
            config_hash: d.config_hash,
            data_fingerprints: d.data_fingerprints,
            privacy: d.privacy,
            secure_aggregation: d.secure_aggregation,
            preprocessing: d.preprocessing,
            schema: d.schema,
            model_spec: d.model_spec,
        })
    }
}

/// The model registry of one data directory. Mutating methods take `&mut self` and run in one SQLite
/// transaction each; several processes may open the same directory (SQLite serializes writers; readers wait up
/// to 5 s for a lock).
#[derive(Debug)]
pub struct Registry {
    conn: Connection,
    artifacts: ArtifactStore,
    data_dir: PathBuf,
}

impl Registry {
    /// Opens (creating if needed) the registry in `data_dir`, creating or checking the schema.
    ///
    /// # Errors
    /// [`RegistryError::Io`] when the directory cannot be created, [`RegistryError::Sqlite`] when the store
    /// cannot be opened, [`RegistryError::SchemaTooNew`] for a store written by a newer version.
    ///
    /// # Example
    /// ```
    /// use cohort_coordinator::registry::{NewVersion, Registry, Stage};
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut registry = Registry::open(dir.path()).unwrap();
    /// let new = NewVersion { name: "heart".into(), round: cohort_core::Round(1), ..Default::default() };
    /// let v = registry.register(&new, &[0u8; 8]).unwrap();
    /// assert_eq!((v.version.0, v.stage), (1, Stage::Candidate));
    /// assert_eq!(registry.artifact("heart", v.version).unwrap(), vec![0u8; 8]);
    /// ```
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Self> {
        let data_dir = data_dir.as_ref().to_owned();
        std::fs::create_dir_all(&data_dir).map_err(|source| io("creating", &data_dir, source))?;
        let artifacts = ArtifactStore::open(data_dir.join(ARTIFACTS_DIR))?;
        let mut conn = Connection::open(data_dir.join(DB_FILE))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(RegistryError::SchemaTooNew { found, supported: SCHEMA_VERSION });
        }
        tx.execute_batch(SCHEMA)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        Ok(Self { conn, artifacts, data_dir })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The artifact store.
    pub fn artifacts(&self) -> &ArtifactStore {
        &self.artifacts
    }

    /// The schema version of the open store.
    ///
    /// # Errors
    /// [`RegistryError::Sqlite`].
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Registers a new version as a `candidate`, storing `artifact` (the model bytes) content-addressed.
    ///
    /// The version number is one more than the largest for `new.name`. If `(new.name, new.round)` is already
    /// registered, that version is returned unchanged and nothing is written (a restarted coordinator that
    /// re-registers a round does not duplicate it; a warning is logged if the artifact differs).
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] for an empty name, a malformed data fingerprint, a non-finite metric or
    /// privacy value, or an unregistered parent; storage errors.
    pub fn register(&mut self, new: &NewVersion, artifact: &[u8]) -> Result<VersionRecord> {
        validate(new)?;
        let sha = self.artifacts.put(artifact)?;
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (record, _) = insert_version(&tx, new, &sha, artifact.len())?;
        tx.commit()?;
        Ok(record)
    }

    /// Registers the version of a completed round and saves the federation's checkpoint, atomically (one
    /// transaction): after a crash either both exist or neither does. If the round was already registered, the
    /// existing version is returned and the checkpoint is left as it is (it was written with that version).
    ///
    /// # Errors
    /// As [`Registry::register`], plus [`RegistryError::StaleCheckpoint`] when the federation's checkpoint is
    /// at a later round (then nothing is written).
    pub fn register_round(
        &mut self,
        federation: &str,
        new: &NewVersion,
        model_bytes: &[u8],
        strategy_state: &Value,
    ) -> Result<VersionRecord> {
        validate(new)?;
        let sha = self.artifacts.put(model_bytes)?;
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (record, created) = insert_version(&tx, new, &sha, model_bytes.len())?;
        if created {
            write_checkpoint(&tx, federation, new.round, &sha, strategy_state, Some((&record.name, record.version)))?;
        }
        tx.commit()?;
        Ok(record)
    }

    /// Saves a federation's checkpoint (last completed round, model, strategy state), replacing the previous
    /// one. Saving the same round again overwrites it.
    ///
    /// # Errors
    /// [`RegistryError::StaleCheckpoint`] for a round before the stored one; storage errors.
    pub fn save_checkpoint(
        &mut self,
        federation: &str,
        round: Round,
        model_bytes: &[u8],
        strategy_state: &Value,
    ) -> Result<()> {
        let sha = self.artifacts.put(model_bytes)?;
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        write_checkpoint(&tx, federation, round, &sha, strategy_state, None)?;
        tx.commit()?;
        Ok(())
    }

    /// Loads a federation's checkpoint, with its model bytes verified against their hash.
    ///
    /// # Errors
    /// [`RegistryError::MissingArtifact`] / [`RegistryError::CorruptArtifact`] when the model file is gone or
    /// altered; storage errors.
    pub fn load_checkpoint(&self, federation: &str) -> Result<Option<Checkpoint>> {
        let row = self
            .conn
            .query_row(
                "SELECT round, sha256, strategy_state, model_name, model_version, saved_unix_ms
                 FROM checkpoints WHERE federation = ?1",
                params![federation],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((round, sha256, state, model_name, model_version, saved)) = row else {
            return Ok(None);
        };
        let model_bytes = self.artifacts.get(&sha256)?;
        Ok(Some(Checkpoint {
            federation: federation.to_owned(),
            round: Round(to_u64(round)),
            sha256,
            model_bytes,
            strategy_state: serde_json::from_str(&state)?,
            version: model_name.zip(model_version.map(|v| Version(to_u64(v)))),
            saved_at: rfc3339_utc(saved),
        }))
    }

    /// Deletes a federation's checkpoint (to start it afresh). Returns whether one existed.
    ///
    /// # Errors
    /// Storage errors.
    pub fn clear_checkpoint(&mut self, federation: &str) -> Result<bool> {
        Ok(self.conn.execute("DELETE FROM checkpoints WHERE federation = ?1", params![federation])? > 0)
    }

    /// Makes `version` the production version of `name`, archiving the current production version. Recorded
    /// with `actor` and `reason`.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`]; [`RegistryError::InvalidTransition`] if it is already production.
    pub fn promote(&mut self, name: &str, version: Version, actor: &str, reason: &str) -> Result<VersionRecord> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        promote_in(&tx, name, version, "promote", actor, reason)?;
        let record = get_version(&tx, name, version)?;
        tx.commit()?;
        Ok(record)
    }

    /// Restores the version that was in production before the current one, and archives the current one.
    /// Returns the restored version. Recorded with `actor` and `reason`.
    ///
    /// # Errors
    /// [`RegistryError::NoProduction`] or [`RegistryError::NothingToRollBack`].
    pub fn rollback(&mut self, name: &str, actor: &str, reason: &str) -> Result<VersionRecord> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current = production_in(&tx, name)?.ok_or_else(|| RegistryError::NoProduction(name.to_owned()))?;
        let mut stack = production_stack(&tx, name)?;
        if stack.last() == Some(&current) {
            stack.pop();
        }
        let previous = stack
            .into_iter()
            .rev()
            .find(|&v| v != current)
            .ok_or_else(|| RegistryError::NothingToRollBack { name: name.to_owned(), current })?;
        let now = now_unix_ms();
        set_stage(&tx, name, current, Stage::Production, Stage::Archived, "rollback", actor, reason, now)?;
        let from = get_version(&tx, name, previous)?.stage;
        set_stage(&tx, name, previous, from, Stage::Production, "rollback", actor, reason, now)?;
        let record = get_version(&tx, name, previous)?;
        tx.commit()?;
        Ok(record)
    }

    /// Records a gate decision on a candidate with the config that produced it. If the decision promotes, the
    /// version is promoted in the same transaction (actor `gate`, reason = the decision's reasons), unless it is
    /// already production. Returns the version's stage afterwards.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`]; storage errors.
    pub fn record_gate_decision(
        &mut self,
        name: &str,
        version: Version,
        config: &GateConfig,
        decision: &GateDecision,
    ) -> Result<Stage> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let record = get_version(&tx, name, version)?;
        let compared_with = production_in(&tx, name)?;
        tx.execute(
            "INSERT INTO gate_decisions (name, version, compared_with, promote, reasons, config, at_unix_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                name,
                to_i64("version", version.0)?,
                compared_with.map(|v| to_i64("version", v.0)).transpose()?,
                decision.promote,
                serde_json::to_string(&decision.reasons)?,
                serde_json::to_string(config)?,
                now_unix_ms(),
            ],
        )?;
        let stage = if decision.promote && record.stage != Stage::Production {
            promote_in(&tx, name, version, "gate", "gate", &decision.summary())?;
            Stage::Production
        } else {
            record.stage
        };
        tx.commit()?;
        Ok(stage)
    }

    /// All versions, of one model or of every model, ordered by name then version.
    ///
    /// # Errors
    /// Storage errors.
    pub fn list(&self, name: Option<&str>) -> Result<Vec<VersionRecord>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions WHERE ?1 IS NULL OR name = ?1 ORDER BY name, version"
        ))?;
        let raws = stmt.query_map(params![name], RawVersion::from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        raws.into_iter().map(RawVersion::parse).collect()
    }

    /// One version.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`]; storage errors.
    pub fn get(&self, name: &str, version: Version) -> Result<VersionRecord> {
        get_version(&self.conn, name, version)
    }

    /// The newest version of `name`, if any.
    ///
    /// # Errors
    /// Storage errors.
    pub fn latest(&self, name: &str) -> Result<Option<VersionRecord>> {
        let raw = self
            .conn
            .query_row(
                &format!("SELECT {VERSION_COLUMNS} FROM model_versions WHERE name = ?1 ORDER BY version DESC LIMIT 1"),
                params![name],
                RawVersion::from_row,
            )
            .optional()?;
        raw.map(RawVersion::parse).transpose()
    }

    /// The current production version of `name`, if any.
    ///
    /// # Errors
    /// Storage errors.
    pub fn production(&self, name: &str) -> Result<Option<VersionRecord>> {
        production_in(&self.conn, name)?.map(|v| get_version(&self.conn, name, v)).transpose()
    }

    /// A version with its stage history and gate decisions.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`]; storage errors.
    pub fn show(&self, name: &str, version: Version) -> Result<VersionDetails> {
        let record = self.get(name, version)?;
        Ok(VersionDetails {
            stage_events: self.stage_events(name, Some(version))?,
            gate_decisions: self.gate_decisions(name, Some(version))?,
            record,
        })
    }

    /// Stage changes of a model (or of one version), oldest first.
    ///
    /// # Errors
    /// Storage errors.
    pub fn stage_events(&self, name: &str, version: Option<Version>) -> Result<Vec<StageEvent>> {
        let v = version.map(|v| to_i64("version", v.0)).transpose()?;
        let mut stmt = self.conn.prepare(
            "SELECT id, version, from_stage, to_stage, action, actor, reason, at_unix_ms FROM stage_events
             WHERE name = ?1 AND (?2 IS NULL OR version = ?2) ORDER BY id",
        )?;
        let rows = stmt
            .query_map(params![name, v], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(id, version, from, to, action, actor, reason, at)| {
                Ok(StageEvent {
                    id,
                    name: name.to_owned(),
                    version: Version(to_u64(version)),
                    from: from.map(|s| s.parse()).transpose()?,
                    to: to.parse()?,
                    action,
                    actor,
                    reason,
                    at: rfc3339_utc(at),
                })
            })
            .collect()
    }

    /// Gate decisions of a model (or of one version), oldest first.
    ///
    /// # Errors
    /// Storage errors.
    pub fn gate_decisions(&self, name: &str, version: Option<Version>) -> Result<Vec<GateRecord>> {
        let v = version.map(|v| to_i64("version", v.0)).transpose()?;
        let mut stmt = self.conn.prepare(
            "SELECT id, version, compared_with, promote, reasons, config, at_unix_ms FROM gate_decisions
             WHERE name = ?1 AND (?2 IS NULL OR version = ?2) ORDER BY id",
        )?;
        let rows = stmt
            .query_map(params![name, v], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(id, version, compared, promote, reasons, config, at)| {
                Ok(GateRecord {
                    id,
                    name: name.to_owned(),
                    version: Version(to_u64(version)),
                    compared_with: compared.map(|c| Version(to_u64(c))),
                    decision: GateDecision { promote, reasons: serde_json::from_str(&reasons)? },
                    config: serde_json::from_str(&config)?,
                    at: rfc3339_utc(at),
                })
            })
            .collect()
    }

    /// Differences between two versions of `name`.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`]; storage errors.
    pub fn diff(&self, name: &str, a: Version, b: Version) -> Result<VersionDiff> {
        Ok(diff_records(&self.get(name, a)?, &self.get(name, b)?))
    }

    /// The artifact (model bytes) of a version, verified against its hash.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`], [`RegistryError::MissingArtifact`], [`RegistryError::CorruptArtifact`].
    pub fn artifact(&self, name: &str, version: Version) -> Result<Vec<u8>> {
        let record = self.get(name, version)?;
        self.artifacts.get(&record.sha256)
    }

    /// Builds the export document of a version (see [`ExportDocument`]) without writing it.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`], artifact errors, [`RegistryError::Invalid`] when the artifact is not a
    /// whole number of finite `f32` values.
    pub fn export_document(&self, name: &str, version: Version) -> Result<ExportDocument> {
        let r = self.get(name, version)?;
        let bytes = self.artifacts.get(&r.sha256)?;
        let values = cohort_core::model::parameters_from_bytes(&bytes)
            .map_err(|e| RegistryError::Invalid(format!("artifact of {name} {version}: {e}")))?;
        cohort_core::model::check_finite(&values)
            .map_err(|e| RegistryError::Invalid(format!("artifact of {name} {version}: {e}")))?;
        let mut ancestors = Vec::new();
        let mut seen = BTreeSet::from([version]);
        let mut next = r.parent;
        while let Some(p) = next {
            if !seen.insert(p) {
                break;
            }
            ancestors.push(p);
            next = match self.get(name, p) {
                Ok(rec) => rec.parent,
                Err(RegistryError::NotFound { .. }) => None,
                Err(e) => return Err(e),
            };
        }
        Ok(ExportDocument {
            format: EXPORT_FORMAT.to_owned(),
            format_version: EXPORT_FORMAT_VERSION,
            name: r.name.clone(),
            version: r.version,
            stage: r.stage,
            weights: ExportedWeights {
                encoding: "f32-array".into(),
                layout: "dense stack [input, hidden..., output], ReLU between layers, softmax on classification \
                         outputs; for each layer in order: weights [in][out] row-major, then bias [out]"
                    .into(),
                count: values.len(),
                sha256: r.sha256.clone(),
                values,
            },
            model_spec: r.model_spec.clone(),
            schema: r.schema.clone(),
            preprocessing: r.preprocessing.clone(),
            metadata: ExportMetadata {
                round: r.round,
                parent: r.parent,
                ancestors,
                created_at: r.created_at.clone(),
                clients: r.clients.clone(),
                strategy: r.strategy.clone(),
                hyperparameters: r.hyperparameters.clone(),
                config_hash: r.config_hash.clone(),
                data_fingerprints: r.data_fingerprints.clone(),
                metrics: r.metrics.clone(),
                slices: r.slices.clone(),
                central: r.central.clone(),
                privacy: r.privacy.clone(),
                secure_aggregation: r.secure_aggregation.clone(),
                stage_events: self.stage_events(name, Some(version))?,
            },
        })
    }

    /// Writes the export document of a version to `out_path` (pretty JSON, written to a temporary file and
    /// renamed) and returns it.
    ///
    /// # Errors
    /// As [`Registry::export_document`], plus [`RegistryError::Io`].
    pub fn export(&self, name: &str, version: Version, out_path: &Path) -> Result<ExportDocument> {
        let doc = self.export_document(name, version)?;
        let text = serde_json::to_string_pretty(&doc)?;
        let file_name = out_path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = out_path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            std::fs::write(&tmp, text.as_bytes())?;
            std::fs::rename(&tmp, out_path)
        };
        write().map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            io("writing export", out_path, source)
        })?;
        Ok(doc)
    }
}

fn validate(new: &NewVersion) -> Result<()> {
    let bad = |m: String| Err(RegistryError::Invalid(m));
    if new.name.trim().is_empty() {
        return bad("model name is empty".into());
    }
    to_i64("round", new.round.0)?;
    for (client, fp) in &new.data_fingerprints {
        if !is_sha256_hex(fp) {
            return bad(format!("data fingerprint of {client} is not a lowercase hex SHA-256: {fp:?}"));
        }
    }
    for (client, p) in &new.privacy {
        if !(p.epsilon.is_finite() && p.epsilon >= 0.0 && (0.0..=1.0).contains(&p.delta)) {
            return bad(format!("privacy spend of {client} is not a valid (ε ≥ 0, δ ∈ [0, 1]): {p:?}"));
        }
    }
    let all = new.metrics.iter().map(|m| ("aggregate", m)).chain(new.slices.iter().map(|(c, m)| (c.as_str(), m)));
    for (who, m) in all {
        if let Some((k, v)) = m.values.iter().find(|(_, v)| !v.is_finite()) {
            return bad(format!("metric {k} of {who} is not finite ({v})"));
        }
    }
    Ok(())
}

/// Inserts a version (or finds the existing one for its round). Returns the record and whether it is new.
fn insert_version(tx: &Transaction<'_>, new: &NewVersion, sha: &str, size: usize) -> Result<(VersionRecord, bool)> {
    let round = to_i64("round", new.round.0)?;
    let existing: Option<i64> = tx
        .query_row("SELECT version FROM model_versions WHERE name = ?1 AND round = ?2", params![new.name, round], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(v) = existing {
        let record = get_version(tx, &new.name, Version(to_u64(v)))?;
        if record.sha256 != sha {
            tracing::warn!(
                name = %new.name, round = new.round.0, existing = %record.sha256, offered = %sha,
                "round already registered with a different artifact; keeping the existing version"
            );
        }
        return Ok((record, false));
    }
    if let Some(parent) = new.parent {
        get_version(tx, &new.name, parent)
            .map_err(|_| RegistryError::Invalid(format!("parent {} {parent} is not registered", new.name)))?;
    }
    let next: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE name = ?1",
        params![new.name],
        |r| r.get(0),
    )?;
    let mut clients = new.clients.clone();
    clients.sort();
    clients.dedup();
    let details = Details {
        clients,
        strategy: new.strategy.clone(),
        hyperparameters: new.hyperparameters.clone(),
        config_hash: new.config_hash.clone(),
        data_fingerprints: new.data_fingerprints.clone(),
        metrics: new.metrics.clone(),
        slices: new.slices.clone(),
        central: new.central.clone(),
        privacy: new.privacy.clone(),
        secure_aggregation: new.secure_aggregation.clone(),
        preprocessing: new.preprocessing.clone(),
        schema: new.schema.clone(),
        model_spec: new.model_spec.clone(),
    };
    let now = now_unix_ms();
    tx.execute(
        &format!("INSERT INTO model_versions ({VERSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
        params![
            new.name,
            next,
            round,
            new.parent.map(|p| to_i64("parent", p.0)).transpose()?,
            Stage::Candidate.as_str(),
            sha,
            to_i64("artifact size", size as u64)?,
            now,
            serde_json::to_string(&details)?,
        ],
    )?;
    let version = Version(to_u64(next));
    record_event(
        tx,
        &new.name,
        version,
        None,
        Stage::Candidate,
        "register",
        "coordinator",
        &format!("registered from round {}", new.round),
        now,
    )?;
    Ok((get_version(tx, &new.name, version)?, true))
}

fn write_checkpoint(
    tx: &Transaction<'_>,
    federation: &str,
    round: Round,
    sha: &str,
    strategy_state: &Value,
    version: Option<(&str, Version)>,
) -> Result<()> {
    let stored: Option<i64> = tx
        .query_row("SELECT round FROM checkpoints WHERE federation = ?1", params![federation], |r| r.get(0))
        .optional()?;
    let offered = to_i64("round", round.0)?;
    if let Some(stored) = stored
        && stored > offered
    {
        return Err(RegistryError::StaleCheckpoint {
            federation: federation.to_owned(),
            stored: Round(to_u64(stored)),
            offered: round,
        });
    }
    tx.execute(
        "INSERT INTO checkpoints (federation, round, sha256, strategy_state, model_name, model_version, saved_unix_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (federation) DO UPDATE SET round = excluded.round, sha256 = excluded.sha256,
             strategy_state = excluded.strategy_state, model_name = excluded.model_name,
             model_version = excluded.model_version, saved_unix_ms = excluded.saved_unix_ms",
        params![
            federation,
            offered,
            sha,
            serde_json::to_string(strategy_state)?,
            version.map(|(n, _)| n),
            version.map(|(_, v)| to_i64("version", v.0)).transpose()?,
            now_unix_ms(),
        ],
    )?;
    Ok(())
}

fn get_version(conn: &Connection, name: &str, version: Version) -> Result<VersionRecord> {
    let v = to_i64("version", version.0)?;
    let raw = conn
        .query_row(
            &format!("SELECT {VERSION_COLUMNS} FROM model_versions WHERE name = ?1 AND version = ?2"),
            params![name, v],
            RawVersion::from_row,
        )
        .optional()?;
    raw.ok_or_else(|| RegistryError::NotFound { name: name.to_owned(), version: Some(version) })?.parse()
}

fn production_in(conn: &Connection, name: &str) -> Result<Option<Version>> {
    let v: Option<i64> = conn
        .query_row("SELECT version FROM model_versions WHERE name = ?1 AND stage = 'production'", params![name], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(v.map(|v| Version(to_u64(v))))
}

/// Production history as a stack, replayed from the stage events: promotions push, rollbacks pop.
fn production_stack(conn: &Connection, name: &str) -> Result<Vec<Version>> {
    let mut stmt = conn
        .prepare("SELECT version, action FROM stage_events WHERE name = ?1 AND to_stage = 'production' ORDER BY id")?;
    let rows = stmt
        .query_map(params![name], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut stack = Vec::new();
    for (v, action) in rows {
        let v = Version(to_u64(v));
        if action == "rollback" {
            stack.pop();
            if stack.last() != Some(&v) {
                stack.push(v);
            }
        } else {
            stack.push(v);
        }
    }
    Ok(stack)
}

fn promote_in(
    tx: &Transaction<'_>,
    name: &str,
    version: Version,
    action: &str,
    actor: &str,
    reason: &str,
) -> Result<()> {
    let record = get_version(tx, name, version)?;
    if record.stage == Stage::Production {
        return Err(RegistryError::InvalidTransition {
            name: name.to_owned(),
            version,
            from: Stage::Production,
            to: Stage::Production,
        });
    }
    let now = now_unix_ms();
    if let Some(current) = production_in(tx, name)? {
        set_stage(tx, name, current, Stage::Production, Stage::Archived, action, actor, reason, now)?;
    }
    set_stage(tx, name, version, record.stage, Stage::Production, action, actor, reason, now)
}

#[allow(clippy::too_many_arguments)]
fn set_stage(
    tx: &Transaction<'_>,
    name: &str,
    version: Version,
    from: Stage,
    to: Stage,
    action: &str,
    actor: &str,
    reason: &str,
    now: i64,
) -> Result<()> {
    tx.execute(
        "UPDATE model_versions SET stage = ?3 WHERE name = ?1 AND version = ?2",
        params![name, to_i64("version", version.0)?, to.as_str()],
    )?;
    record_event(tx, name, version, Some(from), to, action, actor, reason, now)
}

#[allow(clippy::too_many_arguments)]
fn record_event(
    tx: &Transaction<'_>,
    name: &str,
    version: Version,
    from: Option<Stage>,
    to: Stage,
    action: &str,
    actor: &str,
    reason: &str,
    now: i64,
) -> Result<()> {
    tx.execute(
        "INSERT INTO stage_events (name, version, from_stage, to_stage, action, actor, reason, at_unix_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![name, to_i64("version", version.0)?, from.map(Stage::as_str), to.as_str(), action, actor, reason, now],
    )?;
    Ok(())
}

fn metric_deltas(a: Option<&EvalMetrics>, b: Option<&EvalMetrics>) -> BTreeMap<String, MetricDelta> {
    let keys: BTreeSet<&String> = a.iter().chain(b.iter()).flat_map(|m| m.values.keys()).collect();
    keys.into_iter()
        .map(|k| {
            let va = a.and_then(|m| m.get(k));
            let vb = b.and_then(|m| m.get(k));
            let delta = va.zip(vb).map(|(x, y)| y - x);
            (k.clone(), MetricDelta { a: va, b: vb, delta })
        })
        .collect()
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&path, child, out);
            }
        }
        Value::Null if prefix.is_empty() => {}
        leaf => {
            out.insert(if prefix.is_empty() { "$".to_owned() } else { prefix.to_owned() }, leaf.clone());
        }
    }
}

/// Differences between two version records (they may belong to different model names).
pub fn diff_records(a: &VersionRecord, b: &VersionRecord) -> VersionDiff {
    let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &a.hyperparameters, &mut fa);
    flatten("", &b.hyperparameters, &mut fb);
    let paths: BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    let hyperparameters = paths
        .into_iter()
        .filter(|p| fa.get(*p) != fb.get(*p))
        .map(|p| ValueChange { path: p.clone(), a: fa.get(p).cloned(), b: fb.get(p).cloned() })
        .collect();
    let ca: BTreeSet<&String> = a.clients.iter().collect();
    let cb: BTreeSet<&String> = b.clients.iter().collect();
    let slice_clients: BTreeSet<&String> = a.slices.keys().chain(b.slices.keys()).collect();
    let privacy_clients: BTreeSet<&String> = a.privacy.keys().chain(b.privacy.keys()).collect();
    VersionDiff {
        a: format!("{} {}", a.name, a.version),
        b: format!("{} {}", b.name, b.version),
        metrics: metric_deltas(a.metrics.as_ref(), b.metrics.as_ref()),
        slices: slice_clients
            .into_iter()
            .map(|c| (c.clone(), metric_deltas(a.slices.get(c), b.slices.get(c))))
            .collect(),
        strategy: (a.strategy != b.strategy).then(|| (a.strategy.clone(), b.strategy.clone())),
        hyperparameters,
        clients_added: cb.difference(&ca).map(|c| (*c).clone()).collect(),
        clients_removed: ca.difference(&cb).map(|c| (*c).clone()).collect(),
        privacy: privacy_clients
            .into_iter()
            .filter(|c| a.privacy.get(*c) != b.privacy.get(*c))
            .map(|c| (c.clone(), (a.privacy.get(c).copied(), b.privacy.get(c).copied())))
            .collect(),
        config_hash_changed: a.config_hash != b.config_hash,
        weights_changed: a.sha256 != b.sha256,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_core::model::parameters_to_bytes;
    use serde_json::json;

    fn metrics(acc: f64, n: u64) -> EvalMetrics {
        EvalMetrics { examples: n, values: [("accuracy".to_owned(), acc), ("loss".to_owned(), 1.0 - acc)].into() }
    }

    fn fp(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    fn new_version(name: &str, round: u64, parent: Option<u64>, acc: f64) -> NewVersion {
        NewVersion {
            name: name.into(),
            round: Round(round),
            parent: parent.map(Version),
            clients: vec!["hospital-b".into(), "hospital-a".into()],
            strategy: "fedavg".into(),
            hyperparameters: json!({"training": {"lr": 0.05, "local_epochs": 1}, "clip": 1.0}),
            config_hash: "cfg-1".into(),
            data_fingerprints: [("hospital-a".into(), fp('a')), ("hospital-b".into(), fp('b'))].into(),
            metrics: Some(metrics(acc, 200)),
            slices: [("hospital-a".into(), metrics(acc + 0.01, 100)), ("hospital-b".into(), metrics(acc - 0.01, 100))]
                .into(),
            central: Some(metrics(acc - 0.02, 50)),
            privacy: [
                ("hospital-a".into(), PrivacySpend { epsilon: 0.5 * round as f64, delta: 1e-5 }),
                ("hospital-b".into(), PrivacySpend { epsilon: 0.4 * round as f64, delta: 1e-5 }),
            ]
            .into(),
            secure_aggregation: json!({"enabled": true, "threshold": 2, "ring_dim": 4096}),
            preprocessing: json!({"mean": [0.5, -1.0], "std": [1.0, 2.0]}),
            schema: json!({"features": ["age", "bp"], "label": "disease", "task": "binary", "classes": 2}),
            model_spec: json!({"layers": [2, 2], "task": "binary"}),
        }
    }

    fn weights(seed: f32) -> Vec<u8> {
        parameters_to_bytes(&[seed, 0.25, -1.5, 3.0, 0.1, seed * 2.0])
    }

    #[test]
    fn versions_increase_monotonically_per_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(dir.path()).unwrap();
        for r in 1..=3 {
            let v = reg.register(&new_version("heart", r, (r > 1).then(|| r - 1), 0.8), &weights(r as f32)).unwrap();
            assert_eq!(v.version, Version(r));
            assert_eq!(v.stage, Stage::Candidate);
            assert_eq!(v.clients, ["hospital-a", "hospital-b"]);
        }
        let other = reg.register(&new_version("diabetes", 7, None, 0.7), &weights(9.0)).unwrap();
        assert_eq!(other.version, Version(1));
        assert_eq!(reg.list(Some("heart")).unwrap().len(), 3);
        assert_eq!(reg.list(None).unwrap().len(), 4);
        assert_eq!(reg.latest("heart").unwrap().unwrap().version, Version(3));
        // Unknown parent is refused.
        assert!(matches!(
            reg.register(&new_version("heart", 9, Some(42), 0.8), &weights(1.0)),
            Err(RegistryError::Invalid(_))
        ));
    }

    #[test]
    fn re_registering_a_round_returns_the_existing_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(dir.path()).unwrap();
        let first = reg.register(&new_version("heart", 1, None, 0.8), &weights(1.0)).unwrap();
        let again = reg.register(&new_version("heart", 1, None, 0.9), &weights(2.0)).unwrap();
        assert_eq!(again, first);
        assert_eq!(reg.list(None).unwrap().len(), 1);
        assert_eq!(reg.stage_events("heart", None).unwrap().len(), 1);
        let next = reg.register(&new_version("heart", 2, Some(1), 0.8), &weights(3.0)).unwrap();
        assert_eq!(next.version, Version(2));
    }

    #[test]
    fn invalid_inputs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(dir.path()).unwrap();
        let mut bad = new_version("heart", 1, None, 0.8);
        bad.data_fingerprints.insert("hospital-c".into(), "not-a-hash".into());
        assert!(
            matches!(reg.register(&bad, &weights(1.0)), Err(RegistryError::Invalid(m)) if m.contains("hospital-c"))
        );
        let mut bad = new_version("heart", 1, None, 0.8);
        bad.privacy.insert("x".into(), PrivacySpend { epsilon: f64::NAN, delta: 1e-5 });
        assert!(matches!(reg.register(&bad, &weights(1.0)), Err(RegistryError::Invalid(_))));
        let mut bad = new_version("", 1, None, 0.8);
        bad.name = " ".into();
        assert!(matches!(reg.register(&bad, &weights(1.0)), Err(RegistryError::Invalid(_))));
        assert!(reg.list(None).unwrap().is_empty());
        assert!(matches!(reg.get("heart", Version(1)), Err(RegistryError::NotFound { .. })));
    }

    #[test]
    fn promote_and_rollback_restore_the_previous_production_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(dir.path()).unwrap();
        for r in 1..=3 {
            reg.register(&new_version("heart", r, None, 0.8), &weights(r as f32)).unwrap();
        }
        assert!(matches!(reg.rollback("heart", "alice", "x"), Err(RegistryError::NoProduction(_))));
        reg.promote("heart", Version(1), "alice", "first release").unwrap();
        assert!(matches!(reg.rollback("heart", "alice", "x"), Err(RegistryError::NothingToRollBack { .. })));
        reg.promote("heart", Version(2), "bob", "better").unwrap();
        assert_eq!(reg.get("heart", Version(1)).unwrap().stage, Stage::Archived);
        reg.promote("heart", Version(3), "bob", "even better").unwrap();
        assert!(matches!(
            reg.promote("heart", Version(3), "bob", "again"),
            Err(RegistryError::InvalidTransition { from: Stage::Production, .. })
        ));
        assert!(matches!(reg.promote("heart", Version(9), "bob", "?"), Err(RegistryError::NotFound { .. })));

        let restored = reg.rollback("heart", "carol", "v3 misbehaves at hospital-b").unwrap();
        assert_eq!(restored.version, Version(2));
        assert_eq!(reg.production("heart").unwrap().unwrap().version, Version(2));
        assert_eq!(reg.get("heart", Version(3)).unwrap().stage, Stage::Archived);
        // A second rollback goes further back, not back to v3.
        assert_eq!(reg.rollback("heart", "carol", "also bad").unwrap().version, Version(1));
        assert!(matches!(reg.rollback("heart", "carol", "x"), Err(RegistryError::NothingToRollBack { .. })));

        let events = reg.stage_events("heart", Some(Version(3))).unwrap();
        let last = events.last().unwrap();
        assert_eq!((last.from, last.to), (Some(Stage::Production), Stage::Archived));
        assert_eq!((last.action.as_str(), last.actor.as_str()), ("rollback", "carol"));
        assert_eq!(last.reason, "v3 misbehaves at hospital-b");
        assert!(last.at.ends_with('Z'));
        // At most one production version at any time.
        let prod = reg.list(Some("heart")).unwrap().into_iter().filter(|v| v.stage == Stage::Production).count();
        assert_eq!(prod, 1);
    }

    #[test]
    fn gate_decisions_are_recorded_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(dir.path()).unwrap();
        let gate = GateConfig { min_slice: Some(0.5), ..GateConfig::default() };
        let v1 = reg.register(&new_version("heart", 1, None, 0.90), &weights(1.0)).unwrap();
        let d1 = gate.decide(&v1.evaluation().unwrap(), None);
        assert_eq!(reg.record_gate_decision("heart", v1.version, &gate, &d1).unwrap(), Stage::Production);

        // A worse candidate is not promoted, and the reason says why.
        let v2 = reg.register(&new_version("heart", 2, Some(1), 0.85), &weights(2.0)).unwrap();
        let prod = reg.production("heart").unwrap().unwrap().evaluation().unwrap();
        let d2 = gate.decide(&v2.evaluation().unwrap(), Some(&prod));
        assert!(!d2.promote);
        assert_eq!(reg.record_gate_decision("heart", v2.version, &gate, &d2).unwrap(), Stage::Candidate);
        assert_eq!(reg.production("heart").unwrap().unwrap().version, Version(1));

        let shown = reg.show("heart", Version(2)).unwrap();
        assert_eq!(shown.gate_decisions.len(), 1);
        let g = &shown.gate_decisions[0];
        assert_eq!(g.compared_with, Some(Version(1)));
        assert_eq!(g.config, gate);
        assert!(!g.decision.promote);
        // The gate judges the coordinator's central test set (0.88, 0.83 here) over the pooled federated
        // figures (0.90, 0.85) when it has one.
        assert_eq!(g.decision.reasons, ["accuracy 0.8300 is 0.0500 worse than production 0.8800 (tolerance 0.0000)"]);
        let v1_events = reg.stage_events("heart", Some(Version(1))).unwrap();
        assert_eq!(v1_events.last().unwrap().actor, "gate");
        assert_eq!(v1_events.last().unwrap().action, "gate");
        assert!(v1_events.last().unwrap().reason.contains("no production version"));
    }

    #[test]
    fn checkpoint_round_trip_and_atomic_round_registration() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(dir.path()).unwrap();
        assert_eq!(reg.load_checkpoint("fed").unwrap(), None);
        let state = json!({"m": [0.1, 0.2], "v": [0.01, 0.02], "t": 2});
        let rec = reg.register_round("fed", &new_version("heart", 1, None, 0.8), &weights(1.0), &state).unwrap();
        let cp = reg.load_checkpoint("fed").unwrap().unwrap();
        assert_eq!(cp.round, Round(1));
        assert_eq!(cp.model_bytes, weights(1.0));
        assert_eq!(cp.sha256, rec.sha256);
        assert_eq!(cp.strategy_state, state);
        assert_eq!(cp.version, Some(("heart".to_owned(), Version(1))));

        reg.save_checkpoint("fed", Round(3), &weights(3.0), &json!(null)).unwrap();
        // A round-2 registration cannot move the checkpoint backwards: the whole transaction is refused, so no
        // version without checkpoint is left behind.
        let err = reg.register_round("fed", &new_version("heart", 2, Some(1), 0.8), &weights(2.0), &state);
        assert!(matches!(err, Err(RegistryError::StaleCheckpoint { stored: Round(3), offered: Round(2), .. })));
        assert_eq!(reg.list(Some("heart")).unwrap().len(), 1);
        assert_eq!(reg.load_checkpoint("fed").unwrap().unwrap().round, Round(3));
        // Re-registering round 1 returns the existing version and leaves the checkpoint alone.
        let again = reg.register_round("fed", &new_version("heart", 1, None, 0.8), &weights(7.0), &state).unwrap();
        assert_eq!(again.version, Version(1));
        assert_eq!(reg.load_checkpoint("fed").unwrap().unwrap().round, Round(3));
        assert!(reg.clear_checkpoint("fed").unwrap());
        assert_eq!(reg.load_checkpoint("fed").unwrap(), None);
    }

    #[test]
    fn export_contains_weights_preprocessing_schema_spec_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(dir.path()).unwrap();
        reg.register(&new_version("heart", 1, None, 0.8), &weights(1.0)).unwrap();
        let v2 = reg.register(&new_version("heart", 2, Some(1), 0.85), &weights(0.1)).unwrap();
        reg.promote("heart", v2.version, "alice", "release").unwrap();
        let out = dir.path().join("heart-v2.json");
        reg.export("heart", Version(2), &out).unwrap();

        let doc = ExportDocument::read(&out).unwrap();
        doc.verify_weights().unwrap();
        assert_eq!(doc.weights.values, cohort_core::model::parameters_from_bytes(&weights(0.1)).unwrap());
        assert_eq!(doc.weights.sha256, v2.sha256);
        assert_eq!((doc.name.as_str(), doc.version, doc.stage), ("heart", Version(2), Stage::Production));
        assert_eq!(doc.preprocessing["mean"], json!([0.5, -1.0]));
        assert_eq!(doc.preprocessing["std"], json!([1.0, 2.0]));
        assert_eq!(doc.schema["features"], json!(["age", "bp"]));
        assert_eq!(doc.model_spec["layers"], json!([2, 2]));
        assert_eq!(doc.metadata.ancestors, [Version(1)]);
        assert_eq!(doc.metadata.privacy["hospital-a"].epsilon, 1.0);
        assert_eq!(doc.metadata.slices.len(), 2);
        assert_eq!(doc.metadata.data_fingerprints["hospital-b"], fp('b'));
        assert_eq!(doc.metadata.secure_aggregation["threshold"], 2);
        assert_eq!(doc.metadata.stage_events.len(), 2);

        // The raw file is one JSON document with the documented top-level keys.
        let raw: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        for key in ["format", "format_version", "weights", "preprocessing", "schema", "model_spec", "metadata"] {
            assert!(raw.get(key).is_some(), "missing {key}");
        }
        // A tampered weight is detected.
        let mut tampered = doc.clone();
        tampered.weights.values[0] += 1.0;
        assert!(matches!(tampered.verify_weights(), Err(RegistryError::CorruptArtifact { .. })));
    }

    #[test]
    fn corrupt_and_missing_artifacts_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(dir.path()).unwrap();
        let v = reg.register_round("fed", &new_version("heart", 1, None, 0.8), &weights(1.0), &json!({})).unwrap();
        let path = dir.path().join(ARTIFACTS_DIR).join(&v.sha256);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            matches!(reg.artifact("heart", v.version), Err(RegistryError::CorruptArtifact { expected, .. }) if expected == v.sha256)
        );
        assert!(matches!(reg.load_checkpoint("fed"), Err(RegistryError::CorruptArtifact { .. })));
        assert!(matches!(
            reg.export("heart", v.version, &dir.path().join("x.json")),
            Err(RegistryError::CorruptArtifact { .. })
        ));
        // Storing the same content again repairs the file.
        reg.artifacts().put(&weights(1.0)).unwrap();
        assert_eq!(reg.artifact("heart", v.version).unwrap(), weights(1.0));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(reg.artifact("heart", v.version), Err(RegistryError::MissingArtifact { .. })));
        // Names that are not hashes cannot address files.
        assert!(matches!(reg.artifacts().get("../registry.sqlite3"), Err(RegistryError::Invalid(_))));
        // No temporary files are left behind.
        let leftovers = std::fs::read_dir(dir.path().join(ARTIFACTS_DIR))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".tmp"))
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut reg = Registry::open(dir.path()).unwrap();
            reg.register_round("fed", &new_version("heart", 1, None, 0.8), &weights(1.0), &json!({"t": 1})).unwrap();
            reg.promote("heart", Version(1), "alice", "ok").unwrap();
        }
        let mut reg = Registry::open(dir.path()).unwrap();
        assert_eq!(reg.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(reg.production("heart").unwrap().unwrap().version, Version(1));
        assert_eq!(reg.load_checkpoint("fed").unwrap().unwrap().strategy_state, json!({"t": 1}));
        let v2 = reg.register(&new_version("heart", 2, Some(1), 0.8), &weights(2.0)).unwrap();
        assert_eq!(v2.version, Version(2));
        drop(reg);
        // A store from a newer schema is refused.
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(conn);
        assert!(matches!(Registry::open(dir.path()), Err(RegistryError::SchemaTooNew { .. })));
    }

    #[test]
    fn diff_reports_metric_hyperparameter_and_client_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(dir.path()).unwrap();
        reg.register(&new_version("heart", 1, None, 0.80), &weights(1.0)).unwrap();
        let mut n2 = new_version("heart", 2, Some(1), 0.85);
        n2.hyperparameters["training"]["lr"] = json!(0.01);
        n2.hyperparameters["mu"] = json!(0.1);
        n2.strategy = "fedprox".into();
        n2.clients = vec!["hospital-a".into(), "hospital-c".into()];
        reg.register(&n2, &weights(2.0)).unwrap();
        let d = reg.diff("heart", Version(1), Version(2)).unwrap();
        assert!((d.metrics["accuracy"].delta.unwrap() - 0.05).abs() < 1e-12);
        assert!((d.slices["hospital-a"]["accuracy"].delta.unwrap() - 0.05).abs() < 1e-12);
        assert_eq!(d.strategy, Some(("fedavg".into(), "fedprox".into())));
        let paths: Vec<&str> = d.hyperparameters.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["mu", "training.lr"]);
        assert_eq!(d.hyperparameters[1].a, Some(json!(0.05)));
        assert_eq!(d.hyperparameters[0].a, None);
        assert_eq!(d.clients_added, ["hospital-c"]);
        assert_eq!(d.clients_removed, ["hospital-b"]);
        assert!(d.weights_changed && !d.config_hash_changed);
        assert_eq!(d.privacy.len(), 2);
        assert!(reg.diff("heart", Version(1), Version(1)).unwrap().hyperparameters.is_empty());
    }

    #[test]
    fn list_json_has_the_required_fields() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(dir.path()).unwrap();
        reg.register(&new_version("heart", 1, None, 0.8), &weights(1.0)).unwrap();
        reg.register(&new_version("heart", 2, Some(1), 0.8), &weights(2.0)).unwrap();
        let json = serde_json::to_value(reg.list(None).unwrap()).unwrap();
        let item = &json[1];
        for key in ["name", "version", "stage", "sha256", "parent", "metrics", "clients"] {
            assert!(item.get(key).is_some(), "missing {key}");
        }
        assert_eq!(item["version"], 2);
        assert_eq!(item["parent"], 1);
        assert_eq!(item["stage"], "candidate");
        assert_eq!(item["metrics"]["values"]["accuracy"], 0.8);
        let back: Vec<VersionRecord> = serde_json::from_value(json).unwrap();
        assert_eq!(back, reg.list(None).unwrap());
    }

    #[test]
    fn timestamps_and_parsing() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_utc(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!("v3".parse::<Version>().unwrap(), Version(3));
        assert_eq!("12".parse::<Version>().unwrap(), Version(12));
        assert!("v0".parse::<Version>().is_err() && "x".parse::<Version>().is_err());
        assert_eq!("archived".parse::<Stage>().unwrap(), Stage::Archived);
        assert!("live".parse::<Stage>().is_err());
    }
}

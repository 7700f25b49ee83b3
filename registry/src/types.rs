//! What the registry stores: versions and their stages, stage events, gate records and checkpoints.

use crate::artifacts::is_sha256_hex;
use crate::error::{RegistryError, Result};
use crate::gate::{GateConfig, GateDecision};
use crate::sql::to_i64;
use cohort_core::Round;
use cohort_core::metrics::EvalMetrics;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

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
pub(crate) struct Details {
    pub(crate) clients: Vec<String>,
    pub(crate) strategy: String,
    pub(crate) hyperparameters: Value,
    pub(crate) config_hash: String,
    pub(crate) data_fingerprints: BTreeMap<String, String>,
    pub(crate) metrics: Option<EvalMetrics>,
    pub(crate) slices: BTreeMap<String, EvalMetrics>,
    #[serde(default)]
    pub(crate) central: Option<EvalMetrics>,
    pub(crate) privacy: BTreeMap<String, PrivacySpend>,
    pub(crate) secure_aggregation: Value,
    pub(crate) preprocessing: Value,
    pub(crate) schema: Value,
    pub(crate) model_spec: Value,
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

/// Checks a new version before anything is stored.
pub(crate) fn validate(new: &NewVersion) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_stages_parse() {
        assert_eq!("v3".parse::<Version>().unwrap(), Version(3));
        assert_eq!("12".parse::<Version>().unwrap(), Version(12));
        assert!("v0".parse::<Version>().is_err() && "x".parse::<Version>().is_err());
        assert_eq!("archived".parse::<Stage>().unwrap(), Stage::Archived);
        assert!("live".parse::<Stage>().is_err());
    }
}

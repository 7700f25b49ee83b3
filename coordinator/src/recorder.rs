//! Records every completed round in the registry: a new `candidate` version with its lineage, checkpointed in
//! the same transaction, then put through the validation gate.

use crate::central::CentralEval;
use crate::federation::Registration;
use crate::gate::{GateConfig, GateDecision};
use crate::registry::{NewVersion, Registry, RegistryError, Version, VersionRecord};
use cohort_core::NodeName;
use cohort_core::binding::SignedBinding;
use cohort_core::config::FederationPlan;
use cohort_core::ledger::{LedgerError, LedgerRecord, read_jsonl};
use cohort_core::metrics::FederatedEval;
use cohort_core::model::parameters_to_bytes;
use std::collections::BTreeMap;

/// What the recorder did with a round.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The registered version.
    pub record: VersionRecord,
    /// The gate's decision on it.
    pub decision: GateDecision,
}

/// Directory, inside the coordinator's data directory, holding its copy of each node's signed ledger.
pub const LEDGER_COPIES_DIR: &str = "ledgers";
/// Suffix of a node's stored key binding inside [`LEDGER_COPIES_DIR`].
pub const BINDING_SUFFIX: &str = ".binding.json";

/// A node's key binding as the coordinator keeps it for auditors.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredBinding {
    /// The federation the binding is for.
    pub federation: String,
    /// The certificate and the signed keys.
    pub binding: SignedBinding,
}

/// Writes rounds to the registry and keeps the coordinator's copy of the nodes' privacy ledgers.
#[derive(Debug)]
pub struct Recorder {
    registry: Registry,
    plan: FederationPlan,
    gate: GateConfig,
    config_hash: String,
    preprocessing: serde_json::Value,
    central: Option<CentralEval>,
}

impl Recorder {
    /// A recorder over an open registry.
    pub fn new(registry: Registry, plan: FederationPlan, gate: GateConfig, config_hash: String) -> Self {
        let preprocessing = match plan.schema.declared_scaling() {
            Some((center, scale)) => serde_json::json!({
                "kind": "declared-range",
                "formula": "(x - center) / scale, per feature in schema order",
                "center": center,
                "scale": scale,
            }),
            None => serde_json::json!({
                "kind": "per-node-standardization",
                "note": "each node standardized with its own statistics; declare schema.bounds for one federation-wide scaling that serving can reproduce",
            }),
        };
        Self { registry, plan, gate, config_hash, preprocessing, central: None }
    }

    /// Also evaluates every new version on the coordinator's own test set.
    #[must_use]
    pub fn with_central(mut self, central: CentralEval) -> Self {
        self.central = Some(central);
        self
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn copy_path(&self, node: &NodeName) -> std::path::PathBuf {
        self.registry.data_dir().join(LEDGER_COPIES_DIR).join(format!("{}.jsonl", node.0))
    }

    /// Keeps a node's key binding (its certificate and its signature over its keys, the ledger key included)
    /// beside the copy of its ledger, as `ledgers/<node>.binding.json`, so an auditor can check every chain's
    /// signer against the federation CA instead of trusting the first key it sees. Written atomically; a name
    /// that is not a valid node name is refused rather than used in a path.
    ///
    /// # Errors
    /// [`LedgerError::Io`] when the file cannot be written, [`LedgerError::Invalid`] for a bad name.
    pub fn store_binding(&self, federation: &str, binding: &SignedBinding) -> Result<(), LedgerError> {
        cohort_core::pki::check_name(&binding.node).map_err(|e| LedgerError::Invalid(e.to_string()))?;
        let dir = self.registry.data_dir().join(LEDGER_COPIES_DIR);
        let path = dir.join(format!("{}{BINDING_SUFFIX}", binding.node));
        let io = |source| LedgerError::Io { path: path.clone(), source };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let text =
            serde_json::to_vec_pretty(&StoredBinding { federation: federation.to_owned(), binding: binding.clone() })
                .map_err(|e| LedgerError::Invalid(e.to_string()))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path)).map_err(io)
    }

    /// The coordinator's copy of a node's ledger.
    ///
    /// # Errors
    /// [`LedgerError`] for an unreadable or malformed copy.
    pub fn ledger_copy(&self, node: &NodeName) -> Result<Vec<LedgerRecord>, LedgerError> {
        let path = self.copy_path(node);
        match std::fs::File::open(&path) {
            Ok(f) => read_jsonl(std::io::BufReader::new(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(LedgerError::Io { path, source }),
        }
    }

    /// The coordinator's copies of the ledgers of `nodes` (empty for a node without one).
    ///
    /// # Errors
    /// [`LedgerError`] for an unreadable or malformed copy.
    pub fn ledger_copies(
        &self,
        nodes: impl IntoIterator<Item = NodeName>,
    ) -> Result<BTreeMap<NodeName, Vec<LedgerRecord>>, LedgerError> {
        nodes.into_iter().map(|n| Ok((n.clone(), self.ledger_copy(&n)?))).collect()
    }

    /// Appends records, already checked against the node's chain by [`crate::federation::Federation`], to the
    /// coordinator's durable copy of `node`'s ledger (fsynced). A name that is not a valid node name is refused
    /// rather than used in a path.
    ///
    /// # Errors
    /// [`LedgerError`] when the copy cannot be written; nothing is written then.
    pub fn append_ledger(&self, node: &NodeName, records: &[LedgerRecord]) -> Result<(), LedgerError> {
        cohort_core::pki::check_name(&node.0).map_err(|e| LedgerError::Invalid(e.to_string()))?;
        let path = self.copy_path(node);
        let io_err = |source| LedgerError::Io { path: path.clone(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let text: String = records.iter().map(|r| format!("{}\n", r.to_json_line())).collect();
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io_err)?;
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(io_err)
    }

    /// Registers a completed round with its model, checkpoints the federation, and runs the gate.
    ///
    /// # Errors
    /// [`RegistryError`] when the store cannot be written.
    pub fn record(&mut self, registration: &Registration) -> Result<Recorded, RegistryError> {
        let Registration { summary, model: global, strategy, nodes, privacy } = registration;
        let name = self.plan.model_name.clone();
        let parent = self.registry.latest_version(&name)?;
        let new = NewVersion {
            name: name.clone(),
            round: summary.round,
            parent,
            clients: summary.contributors.iter().map(|n| n.0.clone()).collect(),
            strategy: strategy.name.to_owned(),
            hyperparameters: serde_json::json!({
                "strategy": strategy.hyperparameters,
                "training": self.plan.training,
            }),
            config_hash: self.config_hash.clone(),
            data_fingerprints: summary
                .contributors
                .iter()
                .filter_map(|n| {
                    nodes
                        .get(n)
                        .filter(|i| i.data_fingerprint.len() == 64)
                        .map(|i| (n.0.clone(), i.data_fingerprint.clone()))
                })
                .collect(),
            metrics: summary.metrics.clone(),
            slices: summary.slices.iter().map(|(n, m)| (n.0.clone(), m.clone())).collect(),
            central: self
                .central
                .as_ref()
                .and_then(|c| c.evaluate(global).map_err(|e| tracing::warn!(round = summary.round.0, "{e}")).ok()),
            privacy: privacy.clone(),
            // The configured mode plus, for secure rounds, the parameters (N, q, noise, f, R) and who answered.
            secure_aggregation: {
                let mut v = serde_json::to_value(&self.plan.secure_aggregation).unwrap_or_default();
                if let (Some(rec), Some(obj)) = (&summary.secure, v.as_object_mut()) {
                    obj.insert("params".into(), serde_json::to_value(&rec.params).unwrap_or_default());
                    obj.insert("key_holders_answered".into(), rec.responders.len().into());
                    obj.insert("round".into(), serde_json::to_value(rec).unwrap_or_default());
                }
                v
            },
            preprocessing: self.preprocessing.clone(),
            schema: serde_json::to_value(&self.plan.schema).unwrap_or_default(),
            model_spec: serde_json::to_value(&self.plan.model).unwrap_or_default(),
        };
        let record = self.registry.register_round(
            &self.plan.federation_id,
            &new,
            &parameters_to_bytes(global),
            &strategy.state,
        )?;
        let decision = match record.evaluation() {
            Some(candidate) => {
                let production: Option<FederatedEval> = self.registry.production(&name)?.and_then(|p| p.evaluation());
                self.gate.decide(&candidate, production.as_ref())
            }
            None => GateDecision::no_evaluation(),
        };
        let stage = self.registry.record_gate_decision(&name, record.version, &self.gate, &decision)?;
        let record = VersionRecord { stage, ..record };
        Ok(Recorded { record, decision })
    }

    /// The latest registered version of the federation's model.
    ///
    /// # Errors
    /// [`RegistryError`] when the store cannot be read.
    pub fn latest(&self) -> Result<Option<VersionRecord>, RegistryError> {
        self.registry.latest(&self.plan.model_name)
    }

    /// A version of the federation's model.
    ///
    /// # Errors
    /// [`RegistryError`] when the store cannot be read or the version is unknown.
    pub fn get(&self, version: Version) -> Result<VersionRecord, RegistryError> {
        self.registry.get(&self.plan.model_name, version)
    }
}

//! The coordinator's protocol core: everything between a decoded message and the round machine, with no I/O.
//!
//! [`Federation`] owns the [`RoundMachine`], the roster's announced keys and data reports, and the coordinator's
//! copy of every node's privacy ledger. It takes typed protocol messages from an authenticated [`Peer`] and the
//! current time from an injected [`Clock`], answers them, and queues [`Effect`]s: what must be persisted or
//! announced (ledger copies, key bindings, registry versions, events). The transport adapters (the gRPC service,
//! an in-memory link) decode, call the core and carry out its effects outside its lock, in order; so the same
//! rounds run over any transport, and a test drives whole rounds with no runtime and no socket.
//!
//! Protocol policy lives here, not in an adapter: a node's first join only fetches the plan; ledger records are
//! checked against the announced key and the stored chain before the report that carries them is counted, so a
//! version registered by that report carries the node's spend.

use crate::registry::PrivacySpend;
use crate::round::{Event, RoundError, RoundMachine, RoundSummary, Task};
use crate::secure::SecureError;
use cohort_core::binding::{BoundKeys, FederationTrust, SignedBinding, UnixTime};
use cohort_core::config::FederationPlan;
use cohort_core::ledger::{LedgerRecord, verify_chain};
use cohort_core::metrics::EvalMetrics;
use cohort_core::model::parameters_sha256;
use cohort_core::pki::Role;
use cohort_core::protocol::codec::{self, BodyError};
use cohort_core::protocol::{
    Assignment, BodyEncoding, DataReport, Decline, EvaluationReport, JoinKeys, JoinRequest, JoinResponse,
    PartialHeader, ProtocolError, RoundRef, SecureRoundData, ShareBundle, ShareSubmission, TaskHeader, TrainSettings,
    UpdateHeader,
};
use cohort_core::untrusted::Untrusted;
use cohort_core::{ModelVersion, NodeName, Round};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What the coordinator knows of a joined node besides its name.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    /// Ed25519 public key (hex) of the node's ledger.
    pub signing_public_key: String,
    /// X25519 public key (hex) for share envelopes.
    pub encryption_public_key: String,
    /// HMAC of the node's schema and rows under its own secret.
    pub data_fingerprint: String,
    /// The (noisy) example count the node reported.
    pub reported_examples: f64,
    /// The (noisy) training examples per class the node reported (empty if none).
    #[serde(default)]
    pub label_histogram: Vec<i64>,
}

/// The sender of a message, as its transport authenticated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The node's name (its certificate's common name).
    pub name: NodeName,
    /// Its leaf certificate (DER), against which its key binding is checked at join.
    pub certificate_der: Option<Vec<u8>>,
}

/// The source of time of a [`Federation`]: the system clock in a deployment, a virtual one in simulations and
/// tests.
pub trait Clock: Send {
    /// A monotonic instant, for deadlines.
    fn now(&self) -> Instant;
    /// The wall-clock time, for certificate validity.
    fn unix(&self) -> UnixTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix(&self) -> UnixTime {
        UnixTime::now()
    }
}

/// A message the coordinator refuses, grouped by what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The message does not fit the round (stale, unexpected, not selected, malformed update...).
    #[error(transparent)]
    Round(#[from] RoundError),
    /// The message does not decode into the protocol.
    #[error(transparent)]
    Message(#[from] ProtocolError),
    /// The node's key binding does not verify against its certificate and the federation CA.
    #[error("key binding refused: {0}")]
    Binding(String),
    /// Ledger records that do not extend the node's chain or are not signed by its announced key.
    #[error("ledger records refused: {0}")]
    Ledger(String),
}

impl From<BodyError> for Refusal {
    fn from(e: BodyError) -> Self {
        Self::Message(e.into())
    }
}

/// The registry's view of a strategy at one version.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategySnapshot {
    /// Its name.
    pub name: &'static str,
    /// Its hyperparameters.
    pub hyperparameters: serde_json::Value,
    /// Its state, for the checkpoint.
    pub state: serde_json::Value,
}

/// Everything the registry needs to record one completed round.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// The round.
    pub summary: RoundSummary,
    /// The model it produced.
    pub model: Vec<f32>,
    /// The strategy after it.
    pub strategy: StrategySnapshot,
    /// What the nodes reported at join.
    pub nodes: BTreeMap<NodeName, NodeInfo>,
    /// Each node's cumulative spend, from the coordinator's copies of the ledgers.
    pub privacy: BTreeMap<String, PrivacySpend>,
}

/// Something the core asks its adapter to do, in order, outside the core's lock.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Keep a verified key binding for auditors.
    KeepBinding(SignedBinding),
    /// Append checked records to the coordinator's durable copy of `node`'s ledger.
    AppendLedger {
        /// The node.
        node: NodeName,
        /// The new records, already checked against the chain.
        records: Vec<LedgerRecord>,
    },
    /// Register a completed round: a registry version, its checkpoint and the gate's decision.
    Register(Box<Registration>),
    /// Tell observers (progress displays, waiting pollers) what happened.
    Notify(Event),
}

/// How long a node that is told to wait should wait before asking again.
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// The coordinator's protocol core. See the module docs.
pub struct Federation {
    machine: RoundMachine,
    plan: FederationPlan,
    trust: FederationTrust,
    clock: Box<dyn Clock>,
    nodes: BTreeMap<NodeName, NodeInfo>,
    ledgers: BTreeMap<NodeName, Vec<LedgerRecord>>,
    effects: Vec<Effect>,
    /// The SHA-256 of the global model of a version, computed once per version rather than once per task.
    digest: Option<(ModelVersion, String)>,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation").field("machine", &self.machine).finish_non_exhaustive()
    }
}

impl Federation {
    /// A core over `machine` for `plan`. `trust` (the federation CA) checks the key bindings nodes send at join;
    /// `ledgers` are the copies of the nodes' ledgers the coordinator already holds (from an earlier run).
    pub fn new(
        machine: RoundMachine,
        plan: FederationPlan,
        trust: FederationTrust,
        clock: Box<dyn Clock>,
        ledgers: BTreeMap<NodeName, Vec<LedgerRecord>>,
    ) -> Self {
        Self { machine, plan, trust, clock, nodes: BTreeMap::new(), ledgers, effects: Vec::new(), digest: None }
    }

    /// The round machine (read-only: every change goes through a message).
    pub fn machine(&self) -> &RoundMachine {
        &self.machine
    }

    /// The federation plan.
    pub fn plan(&self) -> &FederationPlan {
        &self.plan
    }

    /// What joined nodes reported.
    pub fn nodes(&self) -> &BTreeMap<NodeName, NodeInfo> {
        &self.nodes
    }

    /// Takes the effects queued since the last call, oldest first.
    pub fn drain_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// One line for the operator's log saying what the federation waits for, for example "round 3 training:
    /// waiting for hospital-c (absent since 12:01:07 UTC), 41 s left"; None when it waits for nothing.
    pub fn waiting_line(&self) -> Option<String> {
        let waiting = self.machine.waiting()?;
        let (now, unix) = (self.clock.now(), self.clock.unix().as_secs());
        let nodes: Vec<String> = waiting
            .nodes
            .iter()
            .map(|(node, absent)| match absent {
                Some(since) => {
                    let at = unix.saturating_sub(now.saturating_duration_since(*since).as_secs()) % 86_400;
                    format!("{node} (absent since {:02}:{:02}:{:02} UTC)", at / 3600, at / 60 % 60, at % 60)
                }
                None => node.to_string(),
            })
            .collect();
        let what = if nodes.is_empty() { "a quorum".to_owned() } else { nodes.join(", ") };
        let left = match waiting.deadline {
            Some(deadline) => format!(", {} s left", deadline.saturating_duration_since(now).as_secs()),
            None => String::new(),
        };
        Some(format!("round {} {}: waiting for {what}{left}", waiting.round, waiting.phase))
    }

    /// Advances deadlines to the clock's time; call periodically.
    pub fn tick(&mut self) {
        let now = self.clock.now();
        self.machine.advance(now);
        self.collect();
    }

    /// Turns the machine's events into effects: every event is announced, and a completed evaluation is also
    /// registered, with the model as it stands now (the version the round produced).
    fn collect(&mut self) {
        for event in self.machine.drain_events() {
            if let Event::Evaluated(summary) = &event {
                let strategy = self.machine.strategy();
                let registration = Registration {
                    summary: (**summary).clone(),
                    model: self.machine.global().to_vec(),
                    strategy: StrategySnapshot {
                        name: strategy.name(),
                        hyperparameters: strategy.hyperparameters(),
                        state: strategy.state(),
                    },
                    nodes: self.nodes.clone(),
                    privacy: self.privacy_spend(),
                };
                self.effects.push(Effect::Register(Box::new(registration)));
            }
            self.effects.push(Effect::Notify(event));
        }
    }

    /// Each known node's latest cumulative (ε, δ), from the coordinator's copies of the ledgers.
    pub fn privacy_spend(&self) -> BTreeMap<String, PrivacySpend> {
        self.ledgers
            .iter()
            .filter(|(n, _)| self.nodes.contains_key(*n))
            .filter_map(|(n, chain)| {
                let last = chain.last()?;
                Some((n.0.clone(), PrivacySpend { epsilon: last.body.cumulative_epsilon, delta: last.body.delta }))
            })
            .collect()
    }

    /// Runs `f` on the machine and collects its events.
    fn on_machine<T>(
        &mut self,
        f: impl FnOnce(&mut RoundMachine, Instant) -> Result<T, RoundError>,
    ) -> Result<T, Refusal> {
        let now = self.clock.now();
        let out = f(&mut self.machine, now);
        self.collect();
        Ok(out?)
    }

    /// Checks that a message refers to this federation; returns its round and version.
    fn check_ref(&self, r: &RoundRef) -> Result<(Round, ModelVersion), Refusal> {
        self.machine.check_federation(&r.federation_id)?;
        Ok((r.round, r.version))
    }

    /// The binding of `peer`'s keys to its certificate, if the join carries well-formed keys and a signature; it
    /// must then verify against the certificate and the federation CA.
    fn binding_of(&self, peer: &Peer, keys: &JoinKeys) -> Result<Option<SignedBinding>, Refusal> {
        let key = |bytes: &[u8]| <[u8; 32]>::try_from(bytes).ok();
        let (Some(x25519), Some(share_ed25519)) = (key(&keys.encryption), key(&keys.share_signing)) else {
            return Ok(None);
        };
        let (Some(certificate_der), false) = (peer.certificate_der.clone(), keys.binding_signature.is_empty()) else {
            return Ok(None);
        };
        let binding = SignedBinding {
            node: peer.name.0.clone(),
            certificate_der,
            keys: BoundKeys { x25519, share_ed25519, ledger_ed25519: key(&keys.ledger) },
            signature: keys.binding_signature.clone(),
        };
        self.trust
            .verify_binding(&binding, &self.plan.federation_id, &peer.name.0, Role::Client, self.clock.unix())
            .map_err(|e| Refusal::Binding(e.to_string()))?;
        Ok(Some(binding))
    }

    /// A node joins. Its first join (no data report) only fetches the plan; only a join with a data report
    /// counts towards starting a round, because a round fixes its bounded weights (and, when secure, its public
    /// FedAvg reference count) from those reports when it starts.
    ///
    /// # Errors
    /// [`Refusal`] for another federation, a node outside the roster, a binding that does not verify, or (in a
    /// secure federation) missing keys.
    pub fn join(&mut self, peer: &Peer, join: JoinRequest) -> Result<JoinResponse, Refusal> {
        self.machine.check_federation(&join.federation_id)?;
        let binding = self.binding_of(peer, &join.keys)?;
        let examples = join.data.as_ref().map_or(0.0, |d| d.examples);
        // Keys first: a round this join starts must already know them.
        self.on_machine(|m, _| m.announce(&peer.name, binding.clone(), examples))?;
        if let Some(b) = binding {
            self.effects.push(Effect::KeepBinding(b));
        }
        let discovery_only = join.data.is_none();
        if !discovery_only {
            self.on_machine(|m, now| m.join(&peer.name, now))?;
        }
        let data =
            join.data.unwrap_or(DataReport { fingerprint: String::new(), examples: 0.0, label_histogram: Vec::new() });
        tracing::info!(node = %peer.name, examples = data.examples, labels = ?data.label_histogram, "node joined");
        let earlier = self.nodes.insert(
            peer.name.clone(),
            NodeInfo {
                signing_public_key: hex::encode(&join.keys.ledger),
                encryption_public_key: hex::encode(&join.keys.encryption),
                data_fingerprint: data.fingerprint,
                reported_examples: data.examples,
                label_histogram: data.label_histogram,
            },
        );
        if earlier.is_some() {
            // A restart, or a second process with the same certificate: the last join's keys and data report win.
            tracing::info!(node = %peer.name, "connection of node {} replaced: it joined again", peer.name);
        }
        Ok(JoinResponse {
            federation_id: self.plan.federation_id.clone(),
            plan: self.plan.clone(),
            current_round: self.machine.completed(),
        })
    }

    /// The task for `peer` now, with the model attached to it; [`Assignment::Wait`] when there is nothing to do
    /// yet (the adapter may wait for a change and ask again).
    ///
    /// # Errors
    /// [`Refusal`] for a node outside the roster or not joined, or a `last_seen` of another federation.
    pub fn task(&mut self, peer: &Peer, last_seen: Option<&RoundRef>) -> Result<(TaskHeader, Vec<f32>), Refusal> {
        if let Some(r) = last_seen {
            self.check_ref(r)?;
        }
        let task = self.on_machine(|m, now| m.task_for(&peer.name, now))?;
        let (assignment, round, version) = match task {
            Task::Wait => (Assignment::Wait, Round(0), ModelVersion(0)),
            Task::Decrypt { round, version, request } => (Assignment::Decrypt(request), round, version),
            Task::Train { round, version } => {
                // Secure rounds: the round's public data (seed, participants, keys, policy) and every
                // participant's certificate with its key-binding signature.
                let secure = self
                    .machine
                    .secure_announcement()
                    .map(|(a, b)| SecureRoundData { announcement: a.clone(), bindings: b.to_vec() });
                let t = &self.plan.training;
                let settings = TrainSettings {
                    local_epochs: t.local_epochs,
                    learning_rate: t.learning_rate,
                    batch_size: t.batch_size,
                    proximal_mu: self.plan.proximal_mu(),
                    secure,
                };
                (Assignment::Train(Box::new(settings)), round, version)
            }
            Task::Evaluate { round, version } => (Assignment::Evaluate, round, version),
            Task::Finished { version } => (Assignment::Finished, self.machine.completed(), version),
        };
        let (model, model_sha256) = if assignment.carries_model() {
            (self.machine.global().to_vec(), self.global_digest())
        } else {
            (Vec::new(), String::new())
        };
        let header = TaskHeader {
            round: RoundRef::new(&self.plan.federation_id, round, version),
            retry_after: RETRY_AFTER,
            parameter_count: model.len() as u64,
            model_sha256,
            assignment,
        };
        Ok((header, model))
    }

    /// The SHA-256 of the current global model (empty for an empty model), cached for its version: the model
    /// changes only when the version does.
    fn global_digest(&mut self) -> String {
        let version = self.machine.version();
        match &self.digest {
            Some((v, digest)) if *v == version => digest.clone(),
            _ => {
                let global = self.machine.global();
                let digest = if global.is_empty() { String::new() } else { parameters_sha256(global) };
                self.digest = Some((version, digest.clone()));
                digest
            }
        }
    }

    /// Checks an upload's header before its body is received: returns the body's size in bytes. A stale,
    /// duplicate, unselected or misshapen upload is refused here, so its body is never read.
    ///
    /// # Errors
    /// [`Refusal`] naming why the upload would be refused.
    pub fn check_upload(&mut self, peer: &Peer, header: &UpdateHeader) -> Result<usize, Refusal> {
        let (round, version) = self.check_ref(&header.round)?;
        let expected = match header.encoding {
            BodyEncoding::RlweBodies => self.on_machine(|m, _| m.check_secure_update(&peer.name, round, version))?,
            BodyEncoding::F32Delta => {
                let expected = self.machine.global().len();
                if header.value_count != expected as u64 {
                    return Err(RoundError::BadUpdate(crate::strategy::AggregateError::WrongShape {
                        expected,
                        actual: usize::try_from(header.value_count).unwrap_or(usize::MAX),
                    })
                    .into());
                }
                self.on_machine(|m, _| m.check_update(&peer.name, round, version))?;
                expected
            }
        };
        if header.value_count != expected as u64 {
            return Err(RoundError::Secure(SecureError::BadBody(format!(
                "header declares {} coefficients, expected {expected}",
                header.value_count
            )))
            .into());
        }
        Ok(codec::body_bytes(header.value_count, header.encoding.value_bytes())?)
    }

    /// Accepts an upload whose header passed [`Federation::check_upload`] and whose body has exactly the size it
    /// returned. A refused upload leaves the round unchanged.
    ///
    /// # Errors
    /// [`Refusal`] for a refused update or a body that does not decode.
    pub fn upload(&mut self, peer: &Peer, header: &UpdateHeader, body: &[u8]) -> Result<(), Refusal> {
        let (round, version) = self.check_ref(&header.round)?;
        match header.encoding {
            BodyEncoding::RlweBodies => {
                let bodies = codec::u64s_from_le(body)?;
                self.on_machine(|m, now| m.submit_secure_update(&peer.name, round, version, &bodies, now))?;
                tracing::info!(node = %peer.name, round = round.0, "encrypted update added to the sum");
            }
            BodyEncoding::F32Delta => {
                let delta = codec::f32s_from_le(body)?;
                let loss = header.train_loss.unwrap_or(f64::NAN);
                self.on_machine(|m, now| m.submit_update(&peer.name, round, version, &delta, loss, now))?;
                tracing::info!(node = %peer.name, round = round.0, "update accepted");
            }
        }
        Ok(())
    }

    /// Checks ledger records a node sent against its announced key and the stored chain, keeps them, and queues
    /// the durable append. Records already held are skipped, so a resend is harmless.
    fn take_ledger(&mut self, node: &NodeName, incoming: Vec<LedgerRecord>) -> Result<(), Refusal> {
        if incoming.is_empty() {
            return Ok(());
        }
        let signer = self.nodes.get(node).map(|i| i.signing_public_key.clone()).unwrap_or_default();
        let chain = self.ledgers.entry(node.clone()).or_default();
        let known = chain.len() as u64;
        let fresh: Vec<LedgerRecord> = incoming.into_iter().filter(|r| r.body.seq >= known).collect();
        if let Some(bad) = fresh.iter().find(|r| r.body.node != node.0 || (!signer.is_empty() && r.signer != signer)) {
            return Err(Refusal::Ledger(format!(
                "record {} of {:?} does not belong to {node} or is not signed by its announced key",
                bad.body.seq, bad.body.node
            )));
        }
        if fresh.is_empty() {
            return Ok(());
        }
        let mut extended = chain.clone();
        extended.extend(fresh.iter().cloned());
        verify_chain(&extended, None).map_err(|e| Refusal::Ledger(e.to_string()))?;
        *chain = extended;
        self.effects.push(Effect::AppendLedger { node: node.clone(), records: fresh });
        Ok(())
    }

    /// A node declines the round; the decline's ledger record is kept.
    ///
    /// # Errors
    /// [`Refusal`] for a stale round, an unselected or duplicate sender, or a record that does not extend the
    /// node's chain.
    pub fn decline(&mut self, peer: &Peer, decline: Decline) -> Result<(), Refusal> {
        let (round, version) = self.check_ref(&decline.round)?;
        self.machine.check_member(&peer.name)?;
        self.on_machine(|m, now| m.decline(&peer.name, round, version, &decline.reason, now))?;
        self.take_ledger(&peer.name, decline.record.into_iter().collect())?;
        tracing::info!(node = %peer.name, round = round.0, "node declined: {}", Untrusted(&decline.reason));
        Ok(())
    }

    /// A node reports its evaluation. Its ledger records are taken first, so a version this report completes
    /// carries the node's spend.
    ///
    /// # Errors
    /// [`Refusal`] for a stale or unexpected report, unusable metrics, or ledger records that are refused.
    pub fn report(&mut self, peer: &Peer, report: EvaluationReport) -> Result<(), Refusal> {
        let (round, version) = self.check_ref(&report.round)?;
        // Only a joined member's records are kept, never an outsider's.
        self.machine.check_member(&peer.name)?;
        self.take_ledger(&peer.name, report.ledger)?;
        let metrics = EvalMetrics { examples: 0, values: report.metrics };
        metrics.validate_values().map_err(|e| RoundError::BadReport(e.to_string()))?;
        self.on_machine(|m, now| m.report_evaluation(&peer.name, round, version, metrics, now))
    }

    /// Secure aggregation: a node's sealed key shares and its consent.
    ///
    /// # Errors
    /// [`Refusal`] for a stale round, an unselected node, or shares the round refuses.
    pub fn submit_shares(&mut self, peer: &Peer, shares: ShareSubmission) -> Result<(), Refusal> {
        let (round, version) = self.check_ref(&shares.round)?;
        let count = shares.envelopes.len();
        self.on_machine(|m, now| m.submit_shares(&peer.name, round, version, shares.envelopes, &shares.consent, now))?;
        tracing::info!(node = %peer.name, round = round.0, envelopes = count, "sealed key shares received");
        Ok(())
    }

    /// Secure aggregation: the envelopes addressed to `peer`, once share distribution has closed (not
    /// [`ShareBundle::ready`] while it is open).
    ///
    /// # Errors
    /// [`Refusal`] for a stale round or a node that holds no shares.
    pub fn shares_for(&mut self, peer: &Peer, round: &RoundRef) -> Result<ShareBundle, Refusal> {
        let (r, version) = self.check_ref(round)?;
        let delivery = self.on_machine(|m, now| m.shares_for(&peer.name, r, version, now))?;
        Ok(match delivery {
            Some(d) => ShareBundle { ready: true, envelopes: d.envelopes, key_holders: d.key_holders },
            None => ShareBundle::default(),
        })
    }

    /// Secure aggregation: checks a partial decryption's header before its body; returns the body's size in
    /// bytes.
    ///
    /// # Errors
    /// [`Refusal`] naming why it would be refused.
    pub fn check_partial(&mut self, peer: &Peer, header: &PartialHeader) -> Result<usize, Refusal> {
        let (round, version) = self.check_ref(&header.round)?;
        let expected = self.on_machine(|m, _| m.check_partial(&peer.name, round, version))?;
        if header.value_count != expected as u64 {
            return Err(RoundError::Secure(SecureError::BadPartial(format!(
                "header declares {} values, expected {expected}",
                header.value_count
            )))
            .into());
        }
        Ok(codec::body_bytes(header.value_count, 8)?)
    }

    /// Secure aggregation: stores a partial decryption whose header passed [`Federation::check_partial`].
    ///
    /// # Errors
    /// [`Refusal`] for a stale round or a refused partial.
    pub fn partial(&mut self, peer: &Peer, header: &PartialHeader, body: &[u8]) -> Result<(), Refusal> {
        let (round, version) = self.check_ref(&header.round)?;
        let values = codec::u64s_from_le(body)?;
        self.on_machine(|m, now| m.submit_partial(&peer.name, round, version, values, now))?;
        tracing::info!(node = %peer.name, round = round.0, "partial decryption received");
        Ok(())
    }
}

//! The round state machine: join, select, train, aggregate, evaluate, repeat. No I/O and no ambient state: it is
//! fed messages, the current time and a random generator, and read back for tasks and events, so every transition
//! is testable without a network or a clock, and a run with a seeded generator replays exactly.

use crate::influence::{Influence, TooLarge, Weights};
use crate::secure::{
    Outcome, Poll, RoundStart, SecureError, SecureEvent, SecureRound, SecureRoundRecord, SecureSettings,
};
use crate::strategy::{AggregateError, Strategy, WeightedSum};
use cohort_core::binding::SignedBinding;
use cohort_core::config::{FederationPlan, InfluenceSection};
use cohort_core::metrics::EvalMetrics;
use cohort_core::{ModelVersion, NodeName, Round};
use cohort_crypto::{DecryptionRequest, RoundAnnouncement};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A message the coordinator must refuse. The variants are grouped by blame: the peer sent something wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RoundError {
    /// The message names another federation.
    #[error("message is for federation \"{}\", this is \"{expected}\"", cohort_core::untrusted::Untrusted(actual))]
    WrongFederation {
        /// This federation.
        expected: String,
        /// The one named.
        actual: String,
    },
    /// The node is not in the roster.
    #[error("node {0} is not in the federation roster")]
    NotInRoster(NodeName),
    /// The node has not joined.
    #[error("node {0} has not joined")]
    NotJoined(NodeName),
    /// A message about a round that is not the current one.
    #[error("stale or future round {actual}: the current {phase} round is {expected}")]
    WrongRound {
        /// The current round.
        expected: Round,
        /// The round named.
        actual: Round,
        /// The current phase.
        phase: &'static str,
    },
    /// A message about another model version.
    #[error("model version {actual} does not match the current global model {expected}")]
    WrongModelVersion {
        /// Current version.
        expected: ModelVersion,
        /// Version named.
        actual: ModelVersion,
    },
    /// Nothing of this kind is expected now.
    #[error("no {0} is expected now")]
    Unexpected(&'static str),
    /// The node was not selected for this round.
    #[error("node {0} was not selected for this round")]
    NotSelected(NodeName),
    /// A second answer from the same node.
    #[error("node {0} already answered this round")]
    Duplicate(NodeName),
    /// The update does not fit the model.
    #[error("invalid update: {0}")]
    BadUpdate(#[from] AggregateError),
    /// The evaluation report is unusable.
    #[error("invalid evaluation report: {0}")]
    BadReport(String),
    /// A secure-aggregation message that is refused.
    #[error(transparent)]
    Secure(#[from] SecureError),
    /// A plaintext update beyond the federation's norm bound.
    #[error("refused update: {0}")]
    TooLarge(#[from] TooLarge),
}

/// What a node should do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// Nothing yet.
    Wait,
    /// Train the global model of `version` in `round`.
    Train {
        /// The round.
        round: Round,
        /// The global model version to train from.
        version: ModelVersion,
    },
    /// Evaluate the global model `version`, produced by `round`.
    Evaluate {
        /// The round that produced the model.
        round: Round,
        /// The model version.
        version: ModelVersion,
    },
    /// The federation is over; `version` is final.
    Finished {
        /// The final version.
        version: ModelVersion,
    },
    /// Secure aggregation: answer this decryption request of `round` with a partial decryption.
    Decrypt {
        /// The round.
        round: Round,
        /// The global model version being trained from.
        version: ModelVersion,
        /// The request (participant set S, responders R).
        request: DecryptionRequest,
    },
}

/// Something that happened, for progress displays, logs and the registry.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A node joined.
    Joined(NodeName),
    /// A round started with these nodes.
    RoundStarted {
        /// The round.
        round: Round,
        /// The selected nodes.
        selected: Vec<NodeName>,
    },
    /// An update was accepted.
    UpdateAccepted {
        /// The round.
        round: Round,
        /// The sender.
        node: NodeName,
    },
    /// A node declined the round.
    Declined {
        /// The round.
        round: Round,
        /// The node.
        node: NodeName,
        /// Its reason.
        reason: String,
    },
    /// A round closed without enough updates and will be retried after a backoff.
    RoundFailed {
        /// The round.
        round: Round,
        /// Updates received.
        updates: usize,
        /// Updates required.
        required: usize,
        /// How long the machine waits before it tries the round again.
        retry_in: Duration,
    },
    /// A node missed a deadline (or never joined by the first one): later rounds go on without waiting for it.
    NodeAbsent {
        /// The node.
        node: NodeName,
        /// The phase whose deadline it missed.
        phase: &'static str,
    },
    /// An absent node is back (it asked for a task or joined again); the next round selects it.
    NodeReturned(NodeName),
    /// The same round failed [`RoundSettings::max_round_failures`] times in a row: the federation stopped
    /// without finishing.
    Stopped(Stopped),
    /// A new global model was produced.
    Aggregated {
        /// The round.
        round: Round,
        /// The new version.
        version: ModelVersion,
        /// Nodes whose updates are in it.
        contributors: Vec<NodeName>,
        /// Mean training loss reported by the contributors.
        train_loss: f64,
    },
    /// Secure aggregation: share distribution closed; these nodes hold key shares.
    KeyHoldersFixed {
        /// The round.
        round: Round,
        /// The key holders.
        key_holders: Vec<NodeName>,
    },
    /// Secure aggregation: the participant set S whose encrypted bodies are in the sum.
    ParticipantsAnnounced {
        /// The round.
        round: Round,
        /// The set S.
        participants: Vec<NodeName>,
    },
    /// Secure aggregation: the decryption request went out to these responders.
    DecryptionRequested {
        /// The round.
        round: Round,
        /// The responders R.
        responders: Vec<NodeName>,
    },
    /// The evaluation of a round's model is complete (boxed: the summary, with its secure-round record, is much
    /// larger than every other event).
    Evaluated(Box<RoundSummary>),
    /// All rounds are done.
    Finished {
        /// The final version.
        version: ModelVersion,
    },
}

/// The record of a completed round.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoundSummary {
    /// The round.
    pub round: Round,
    /// The model version it produced.
    pub version: ModelVersion,
    /// Nodes whose updates went into the model.
    pub contributors: Vec<NodeName>,
    /// Nodes that declined, with reasons.
    pub declined: Vec<(NodeName, String)>,
    /// Mean training loss of the contributors.
    pub train_loss: f64,
    /// Example-weighted evaluation metrics over the reporting nodes (None when nobody reported).
    pub metrics: Option<EvalMetrics>,
    /// Per-node evaluation metrics (slices).
    pub slices: Vec<(NodeName, EvalMetrics)>,
    /// Secure-aggregation record of the round (None when it ran in plaintext).
    #[serde(default)]
    pub secure: Option<SecureRoundRecord>,
}

/// Why a federation stopped before its last round.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stopped {
    /// The round that kept failing.
    pub round: Round,
    /// How many times in a row it failed.
    pub failures: u32,
    /// What the last failure was.
    pub reason: String,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "round {} failed {} times in a row (last: {})", self.round, self.failures, self.reason)
    }
}

/// What the machine is waiting for, for the operator's log.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    /// The round (the next one while joining).
    pub round: Round,
    /// The phase (and secure stage).
    pub phase: String,
    /// The nodes it waits for, with the time each was marked absent (None: not absent).
    pub nodes: Vec<(NodeName, Option<Instant>)>,
    /// When the wait ends (None: until a quorum is there).
    pub deadline: Option<Instant>,
}

// One phase value exists per machine and it is replaced, not copied: boxing the training state buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Phase {
    Joining {
        since: Option<Instant>,
    },
    /// A failed round waits before it is tried again.
    Backoff {
        until: Instant,
    },
    Training(Training),
    Evaluating(Evaluating),
    Finished,
}

#[derive(Debug)]
struct Training {
    round: Round,
    selected: BTreeSet<NodeName>,
    answered: BTreeSet<NodeName>,
    contributors: Vec<NodeName>,
    declined: Vec<(NodeName, String)>,
    losses: Vec<f64>,
    sum: WeightedSum,
    /// Every accepted delta, kept only for a strategy that needs them (the robust ones, plaintext only).
    individual: Option<Vec<Vec<f32>>>,
    /// The round's bounded weights over the selected nodes, fixed when it starts.
    weights: Weights,
    deadline: Instant,
    secure: Option<SecureRound>,
    secure_record: Option<SecureRoundRecord>,
}

#[derive(Debug)]
struct Evaluating {
    summary: RoundSummary,
    expected: BTreeSet<NodeName>,
    deadline: Instant,
}

/// Timing and quorum settings of the machine.
#[derive(Debug, Clone)]
pub struct RoundSettings {
    /// Rounds to run.
    pub rounds: u64,
    /// Minimum updates for a round to complete.
    pub min_clients: usize,
    /// How long a phase waits for stragglers.
    pub deadline: Duration,
    /// How many clients to select per round, for its training and, in a separate sample, its evaluation
    /// (None: all present).
    pub clients_per_round: Option<usize>,
    /// Consecutive failures of one round before the federation stops.
    pub max_round_failures: u32,
    /// How much one node can move the model and the pooled metrics.
    pub influence: InfluenceSection,
}

impl RoundSettings {
    /// Settings taken from a federation plan.
    pub fn from_plan(plan: &FederationPlan) -> Self {
        Self {
            rounds: plan.training.rounds,
            min_clients: plan.training.min_clients,
            deadline: Duration::from_secs(plan.training.round_deadline_secs),
            clients_per_round: plan.training.clients_per_round,
            max_round_failures: plan.training.max_round_failures,
            influence: plan.influence,
        }
    }
}

/// The coordinator's round state machine.
pub struct RoundMachine {
    federation_id: String,
    roster: BTreeSet<NodeName>,
    joined: BTreeSet<NodeName>,
    /// Roster nodes that missed a deadline (or never joined by the first), since when; not waited for.
    absent: BTreeMap<NodeName, Instant>,
    /// Consecutive failures of the current round.
    failures: u32,
    stopped: Option<Stopped>,
    settings: RoundSettings,
    strategy: Box<dyn Strategy>,
    global: Vec<f32>,
    version: ModelVersion,
    completed: Round,
    phase: Phase,
    history: Vec<RoundSummary>,
    events: Vec<Event>,
    secure: Option<SecureSettings>,
    bindings: BTreeMap<NodeName, SignedBinding>,
    examples: BTreeMap<NodeName, f64>,
    rng: ChaCha20Rng,
}

impl std::fmt::Debug for RoundMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundMachine")
            .field("federation_id", &self.federation_id)
            .field("version", &self.version)
            .field("completed", &self.completed)
            .field("phase", &self.phase_name())
            .finish_non_exhaustive()
    }
}

impl RoundMachine {
    /// A machine at version `version` after `completed` rounds (0 and 0 for a fresh federation).
    pub fn new(
        federation_id: &str,
        roster: impl IntoIterator<Item = NodeName>,
        settings: RoundSettings,
        strategy: Box<dyn Strategy>,
        global: Vec<f32>,
        completed: Round,
        version: ModelVersion,
    ) -> Self {
        let phase = if completed.0 >= settings.rounds { Phase::Finished } else { Phase::Joining { since: None } };
        Self {
            federation_id: federation_id.to_owned(),
            roster: roster.into_iter().collect(),
            joined: BTreeSet::new(),
            absent: BTreeMap::new(),
            failures: 0,
            stopped: None,
            settings,
            strategy,
            global,
            version,
            completed,
            phase,
            history: Vec::new(),
            events: Vec::new(),
            secure: None,
            bindings: BTreeMap::new(),
            examples: BTreeMap::new(),
            rng: ChaCha20Rng::from_os_rng(),
        }
    }

    /// Draws client selection, round ids, nonces and mask seeds from `rng` instead of a generator seeded by the
    /// operating system. For reproducible simulations only: a coordinator whose seed is known announces
    /// predictable round ids and mask seeds.
    #[must_use]
    pub fn with_rng(mut self, rng: ChaCha20Rng) -> Self {
        self.rng = rng;
        self
    }

    /// Runs every round with threshold-RLWE secure aggregation under `settings`: the machine then
    /// refuses plaintext updates and only ever sees the decrypted sum.
    pub fn with_secure_aggregation(mut self, settings: SecureSettings) -> Self {
        self.secure = Some(settings);
        self
    }

    /// Records what a node announced at join: its public keys bound to its certificate (checked by the caller
    /// against the federation CA) and its reported example count. Call it before [`RoundMachine::join`], so a
    /// round that the join starts already knows the keys.
    ///
    /// # Errors
    /// [`RoundError::NotInRoster`]; [`SecureError::MissingKeys`] in a secure federation when
    /// `binding` is None.
    pub fn announce(
        &mut self,
        node: &NodeName,
        binding: Option<SignedBinding>,
        reported_examples: f64,
    ) -> Result<(), RoundError> {
        if !self.roster.contains(node) {
            return Err(RoundError::NotInRoster(node.clone()));
        }
        match binding {
            Some(b) => {
                self.bindings.insert(node.clone(), b);
            }
            None if self.secure.is_some() => return Err(SecureError::MissingKeys(node.clone()).into()),
            None => {}
        }
        if reported_examples.is_finite() && reported_examples > 0.0 {
            self.examples.insert(node.clone(), reported_examples);
        }
        Ok(())
    }

    /// The public data of the current secure round, if one is running: the announcement and the participants'
    /// certificate-bound keys.
    pub fn secure_announcement(&self) -> Option<(&RoundAnnouncement, &[SignedBinding])> {
        match &self.phase {
            Phase::Training(t) => t.secure.as_ref().map(|s| (s.announcement(), s.bindings())),
            _ => None,
        }
    }

    fn quorum(&self) -> usize {
        self.settings.min_clients.max(self.secure.as_ref().map_or(0, SecureSettings::quorum))
    }

    /// The federation id.
    pub fn federation_id(&self) -> &str {
        &self.federation_id
    }

    /// The current global model.
    pub fn global(&self) -> &[f32] {
        &self.global
    }

    /// The current global model version.
    pub fn version(&self) -> ModelVersion {
        self.version
    }

    /// The last completed round.
    pub fn completed(&self) -> Round {
        self.completed
    }

    /// The strategy.
    pub fn strategy(&self) -> &dyn Strategy {
        self.strategy.as_ref()
    }

    /// Completed round summaries.
    pub fn history(&self) -> &[RoundSummary] {
        &self.history
    }

    /// Whether all rounds are done.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished)
    }

    /// The phase name, for messages.
    pub fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::Joining { .. } => "joining",
            Phase::Backoff { .. } => "backoff",
            Phase::Training(_) => "training",
            Phase::Evaluating(_) => "evaluation",
            Phase::Finished => "finished",
        }
    }

    /// Why the federation stopped before its last round (None while it runs, or when it finished).
    pub fn stopped(&self) -> Option<&Stopped> {
        self.stopped.as_ref()
    }

    /// The roster nodes currently marked absent, with the time each was marked.
    pub fn absent(&self) -> &BTreeMap<NodeName, Instant> {
        &self.absent
    }

    /// What the machine waits for now (None when finished or backing off).
    pub fn waiting(&self) -> Option<Waiting> {
        let mark = |n: &NodeName| (n.clone(), self.absent.get(n).copied());
        match &self.phase {
            Phase::Joining { since } => Some(Waiting {
                round: Round(self.completed.0 + 1),
                phase: "joining".into(),
                nodes: self.roster.iter().filter(|n| !self.is_present(n)).map(mark).collect(),
                deadline: since.map(|s| s + self.settings.deadline),
            }),
            Phase::Training(t) => {
                let (nodes, deadline) = match &t.secure {
                    Some(s) => s.waiting_for(&t.answered),
                    None => (t.selected.difference(&t.answered).cloned().collect(), t.deadline),
                };
                let phase = match &t.secure {
                    Some(s) => format!("training ({})", s.stage_name()),
                    None => "training".into(),
                };
                Some(Waiting {
                    round: t.round,
                    phase,
                    nodes: nodes.iter().map(mark).collect(),
                    deadline: Some(deadline),
                })
            }
            Phase::Evaluating(e) => Some(Waiting {
                round: e.summary.round,
                phase: "evaluation".into(),
                nodes: e.expected.iter().map(mark).collect(),
                deadline: Some(e.deadline),
            }),
            Phase::Backoff { .. } | Phase::Finished => None,
        }
    }

    /// The next instant at which [`RoundMachine::advance`] would act without any message arriving (a phase or
    /// stage deadline, the end of a backoff), or None while only messages can move the machine. A driver with a
    /// virtual clock (a simulation) jumps to it when every node is waiting.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Joining { since } => since.map(|s| s + self.settings.deadline),
            Phase::Backoff { until } => Some(*until),
            Phase::Training(t) => Some(t.secure.as_ref().map_or(t.deadline, SecureRound::deadline)),
            Phase::Evaluating(e) => Some(e.deadline),
            Phase::Finished => None,
        }
    }

    /// Whether `node` has joined and is not marked absent.
    fn is_present(&self, node: &NodeName) -> bool {
        self.joined.contains(node) && !self.absent.contains_key(node)
    }

    /// The joined nodes not marked absent.
    fn present(&self) -> BTreeSet<NodeName> {
        self.joined.iter().filter(|n| !self.absent.contains_key(*n)).cloned().collect()
    }

    /// The present nodes a round asks, in name order: all of them, or with
    /// [`RoundSettings::clients_per_round`] = k a fresh uniform sample of k (at least the quorum). Each round
    /// draws one sample for training and another for evaluation.
    fn sample_present(&mut self) -> Vec<NodeName> {
        let mut nodes: Vec<NodeName> = self.present().into_iter().collect();
        if let Some(k) = self.settings.clients_per_round {
            use rand::seq::SliceRandom;
            nodes.shuffle(&mut self.rng);
            nodes.truncate(k.max(self.quorum()));
            nodes.sort();
        }
        nodes
    }

    /// How many nodes [`RoundMachine::present`] would list, in time linear in the absent nodes only.
    fn present_count(&self) -> usize {
        self.joined.len() - self.absent.keys().filter(|n| self.joined.contains(*n)).count()
    }

    /// Whether every roster node has joined or is known to be absent, so that nobody is left to wait for
    /// (joined and absent nodes are roster nodes).
    fn all_accounted_for(&self) -> bool {
        let absent_unjoined = self.absent.keys().filter(|n| !self.joined.contains(*n)).count();
        self.joined.len() + absent_unjoined >= self.roster.len()
    }

    /// Marks each of `nodes` absent since `now` (a missed deadline).
    fn mark_absent(&mut self, nodes: impl IntoIterator<Item = NodeName>, phase: &'static str, now: Instant) {
        for node in nodes {
            if !self.absent.contains_key(&node) {
                tracing::warn!(node = %node, phase, "node missed the {phase} deadline: marked absent, later rounds do not wait for it");
                self.absent.insert(node.clone(), now);
                self.events.push(Event::NodeAbsent { node, phase });
            }
        }
    }

    /// A message from `node`: an absent node is back.
    fn heard_from(&mut self, node: &NodeName) {
        if self.absent.remove(node).is_some() {
            tracing::info!(node = %node, "absent node is back; the next round selects it");
            self.events.push(Event::NodeReturned(node.clone()));
        }
    }

    /// The round currently running (training or evaluation), if any.
    pub fn current_round(&self) -> Option<Round> {
        match &self.phase {
            Phase::Training(t) => Some(t.round),
            Phase::Evaluating(e) => Some(e.summary.round),
            _ => None,
        }
    }

    /// Takes the events produced since the last call.
    pub fn drain_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Checks a message's federation id.
    ///
    /// # Errors
    /// [`RoundError::WrongFederation`].
    pub fn check_federation(&self, federation_id: &str) -> Result<(), RoundError> {
        if federation_id != self.federation_id {
            return Err(RoundError::WrongFederation {
                expected: self.federation_id.clone(),
                actual: federation_id.to_owned(),
            });
        }
        Ok(())
    }

    /// A node joins (again, after a restart, is fine).
    ///
    /// # Errors
    /// [`RoundError::NotInRoster`] for a node outside the roster.
    pub fn join(&mut self, node: &NodeName, now: Instant) -> Result<(), RoundError> {
        if !self.roster.contains(node) {
            return Err(RoundError::NotInRoster(node.clone()));
        }
        if self.joined.insert(node.clone()) {
            self.events.push(Event::Joined(node.clone()));
        }
        self.heard_from(node);
        if let Phase::Joining { since } = &mut self.phase {
            since.get_or_insert(now);
        }
        self.advance(now);
        Ok(())
    }

    /// Checks that `node` is in the roster and has joined.
    ///
    /// # Errors
    /// [`RoundError::NotInRoster`] or [`RoundError::NotJoined`].
    pub fn check_member(&self, node: &NodeName) -> Result<(), RoundError> {
        if !self.roster.contains(node) {
            return Err(RoundError::NotInRoster(node.clone()));
        }
        if !self.joined.contains(node) {
            return Err(RoundError::NotJoined(node.clone()));
        }
        Ok(())
    }

    /// What `node` should do now.
    ///
    /// # Errors
    /// [`RoundError::NotInRoster`] or [`RoundError::NotJoined`].
    pub fn task_for(&mut self, node: &NodeName, now: Instant) -> Result<Task, RoundError> {
        self.check_member(node)?;
        self.heard_from(node);
        self.advance(now);
        let version = self.version;
        if let Phase::Training(t) = &mut self.phase {
            let shared = t.secure.as_ref().is_some_and(|s| s.has_shared(node));
            if t.selected.contains(node) && !t.answered.contains(node) && !shared {
                return Ok(Task::Train { round: t.round, version });
            }
            if let Some(s) = t.secure.as_mut() {
                let (poll, fixed_now) = s.poll(node);
                if fixed_now {
                    self.events.push(Event::DecryptionRequested { round: t.round, responders: s.responders() });
                }
                if let Poll::Decrypt(request) = poll {
                    return Ok(Task::Decrypt { round: t.round, version, request });
                }
            }
            return Ok(Task::Wait);
        }
        Ok(match &self.phase {
            Phase::Evaluating(e) if e.expected.contains(node) => {
                Task::Evaluate { round: e.summary.round, version: self.version }
            }
            Phase::Finished => Task::Finished { version: self.version },
            _ => Task::Wait,
        })
    }

    fn training_for(
        &mut self,
        node: &NodeName,
        round: Round,
        version: ModelVersion,
    ) -> Result<&mut Training, RoundError> {
        self.check_member(node)?;
        let current = self.version;
        let phase = self.phase_name();
        let current_round = self.current_round();
        let Phase::Training(t) = &mut self.phase else {
            return Err(match current_round {
                Some(expected) if expected != round => RoundError::WrongRound { expected, actual: round, phase },
                _ => RoundError::Unexpected("training update"),
            });
        };
        if t.round != round {
            return Err(RoundError::WrongRound { expected: t.round, actual: round, phase });
        }
        if version != current {
            return Err(RoundError::WrongModelVersion { expected: current, actual: version });
        }
        if !t.selected.contains(node) {
            return Err(RoundError::NotSelected(node.clone()));
        }
        if t.answered.contains(node) {
            return Err(RoundError::Duplicate(node.clone()));
        }
        Ok(t)
    }

    /// Checks that `node` may upload an update for `round`/`version` now, before its body is received.
    ///
    /// # Errors
    /// [`RoundError`] naming why the update would be refused.
    pub fn check_update(&mut self, node: &NodeName, round: Round, version: ModelVersion) -> Result<(), RoundError> {
        let t = self.training_for(node, round, version)?;
        if t.secure.is_some() {
            return Err(SecureError::PlaintextRefused.into());
        }
        Ok(())
    }

    /// The federation's influence bounds.
    fn influence(&self) -> Influence {
        Influence::new(self.settings.influence)
    }

    /// Accepts a plaintext training update: the delta from the global model, weighted by the node's bounded
    /// weight of the round ([`Influence::weights`]), never by a number the node declares with its update.
    ///
    /// # Errors
    /// [`RoundError`] for a stale round, a wrong version, an unselected or duplicate sender, a malformed delta, or
    /// one whose norm exceeds the federation's `max_update_norm`. A refused update leaves the round unchanged.
    pub fn submit_update(
        &mut self,
        node: &NodeName,
        round: Round,
        version: ModelVersion,
        delta: &[f32],
        train_loss: f64,
        now: Instant,
    ) -> Result<(), RoundError> {
        let influence = self.influence();
        let t = self.training_for(node, round, version)?;
        if t.secure.is_some() {
            return Err(SecureError::PlaintextRefused.into());
        }
        // A malformed delta is refused as such before its norm is looked at.
        t.sum.check(delta)?;
        influence.check_update(delta)?;
        let weight = t.weights.of(node);
        t.sum.add(delta, weight)?;
        if let Some(all) = &mut t.individual {
            all.push(delta.to_vec());
        }
        t.answered.insert(node.clone());
        t.contributors.push(node.clone());
        if train_loss.is_finite() {
            t.losses.push(train_loss);
        }
        self.events.push(Event::UpdateAccepted { round, node: node.clone() });
        self.advance(now);
        Ok(())
    }

    /// Records that `node` declined the round.
    ///
    /// # Errors
    /// [`RoundError`] for a stale round or an unselected or duplicate sender.
    pub fn decline(
        &mut self,
        node: &NodeName,
        round: Round,
        version: ModelVersion,
        reason: &str,
        now: Instant,
    ) -> Result<(), RoundError> {
        let t = self.training_for(node, round, version)?;
        t.answered.insert(node.clone());
        t.declined.push((node.clone(), reason.to_owned()));
        self.events.push(Event::Declined { round, node: node.clone(), reason: reason.to_owned() });
        self.advance(now);
        Ok(())
    }

    fn secure_for(
        &mut self,
        node: &NodeName,
        round: Round,
        version: ModelVersion,
    ) -> Result<&mut Training, RoundError> {
        self.check_member(node)?;
        let current = self.version;
        let phase = self.phase_name();
        let current_round = self.current_round();
        let Phase::Training(t) = &mut self.phase else {
            return Err(match current_round {
                Some(expected) if expected != round => RoundError::WrongRound { expected, actual: round, phase },
                _ => RoundError::Unexpected("secure-aggregation message"),
            });
        };
        if t.round != round {
            return Err(RoundError::WrongRound { expected: t.round, actual: round, phase });
        }
        if version != current {
            return Err(RoundError::WrongModelVersion { expected: current, actual: version });
        }
        if t.secure.is_none() {
            return Err(SecureError::Disabled.into());
        }
        if !t.selected.contains(node) {
            return Err(RoundError::NotSelected(node.clone()));
        }
        Ok(t)
    }

    /// Secure aggregation: stores `node`'s sealed key shares, one opaque envelope per other participant, and
    /// its consent signature over the round's announcement.
    ///
    /// # Errors
    /// [`RoundError`] for a stale round or version, an unselected node, or a [`SecureError`].
    pub fn submit_shares(
        &mut self,
        node: &NodeName,
        round: Round,
        version: ModelVersion,
        envelopes: Vec<(NodeName, Vec<u8>)>,
        consent: &[u8],
        now: Instant,
    ) -> Result<(), RoundError> {
        let t = self.secure_for(node, round, version)?;
        if t.answered.contains(node) {
            return Err(RoundError::Duplicate(node.clone()));
        }
        if let Some(s) = t.secure.as_mut() {
            s.submit_shares(node, envelopes, consent)?;
        }
        self.advance(now);
        Ok(())
    }

    /// Secure aggregation: the envelopes addressed to `node` and the key holders, once share
    /// distribution has closed (None while it is open).
    ///
    /// # Errors
    /// [`RoundError`] for a stale round or version, or [`SecureError::NotAKeyHolder`].
    pub fn shares_for(
        &mut self,
        node: &NodeName,
        round: Round,
        version: ModelVersion,
        now: Instant,
    ) -> Result<Option<crate::secure::Delivery>, RoundError> {
        self.advance(now);
        let t = self.secure_for(node, round, version)?;
        match t.secure.as_ref() {
            Some(s) => Ok(s.shares_for(node)?),
            None => Err(SecureError::Disabled.into()),
        }
    }

    /// Secure aggregation: checks that `node` may upload encrypted bodies now; returns the number of
    /// `u64` bodies expected.
    ///
    /// # Errors
    /// [`RoundError`] naming why the upload would be refused.
    pub fn check_secure_update(
        &mut self,
        node: &NodeName,
        round: Round,
        version: ModelVersion,
    ) -> Result<usize, RoundError> {
        let t = self.secure_for(node, round, version)?;
        if t.answered.contains(node) {
            return Err(RoundError::Duplicate(node.clone()));
        }
        match t.secure.as_ref() {
            Some(s) => {
                s.check_upload(node)?;
                Ok(s.body_len())
            }
            None => Err(SecureError::Disabled.into()),
        }
    }

    /// Secure aggregation: adds `node`'s complete encrypted bodies to the round's sum. Nothing else of the node
    /// is taken in clear: no training loss, no example count.
    ///
    /// # Errors
    /// [`RoundError`] for a stale or refused upload; the sum is unchanged then.
    pub fn submit_secure_update(
        &mut self,
        node: &NodeName,
        round: Round,
        version: ModelVersion,
        bodies: &[u64],
        now: Instant,
    ) -> Result<(), RoundError> {
        let t = self.secure_for(node, round, version)?;
        if t.answered.contains(node) {
            return Err(RoundError::Duplicate(node.clone()));
        }
        if let Some(s) = t.secure.as_mut() {
            s.add_upload(node, bodies)?;
        }
        t.answered.insert(node.clone());
        t.contributors.push(node.clone());
        self.events.push(Event::UpdateAccepted { round, node: node.clone() });
        self.advance(now);
        Ok(())
    }

    /// Secure aggregation: checks that `node` may send its partial decryption now; returns the
    /// number of values expected.
    ///
    /// # Errors
    /// [`RoundError`] naming why it would be refused.
    pub fn check_partial(&mut self, node: &NodeName, round: Round, version: ModelVersion) -> Result<usize, RoundError> {
        let t = self.secure_for(node, round, version)?;
        match t.secure.as_ref() {
            Some(s) => {
                s.check_partial(node)?;
                Ok(s.body_len())
            }
            None => Err(SecureError::Disabled.into()),
        }
    }

    /// Secure aggregation: stores `node`'s partial decryption; the round decodes once all
    /// responders answered.
    ///
    /// # Errors
    /// [`RoundError`] for a stale round or a refused partial.
    pub fn submit_partial(
        &mut self,
        node: &NodeName,
        round: Round,
        version: ModelVersion,
        values: Vec<u64>,
        now: Instant,
    ) -> Result<(), RoundError> {
        let t = self.secure_for(node, round, version)?;
        if let Some(s) = t.secure.as_mut() {
            s.add_partial(node, values)?;
        }
        self.advance(now);
        Ok(())
    }

    /// Accepts an evaluation report of the current model.
    ///
    /// # Errors
    /// [`RoundError`] for a stale round or version, an unexpected or duplicate report.
    pub fn report_evaluation(
        &mut self,
        node: &NodeName,
        round: Round,
        version: ModelVersion,
        metrics: EvalMetrics,
        now: Instant,
    ) -> Result<(), RoundError> {
        self.check_member(node)?;
        let current = self.version;
        let phase = self.phase_name();
        let Phase::Evaluating(e) = &mut self.phase else {
            return Err(RoundError::Unexpected("evaluation report"));
        };
        if e.summary.round != round {
            return Err(RoundError::WrongRound { expected: e.summary.round, actual: round, phase });
        }
        if version != current {
            return Err(RoundError::WrongModelVersion { expected: current, actual: version });
        }
        if !e.expected.remove(node) {
            return Err(RoundError::Duplicate(node.clone()));
        }
        e.summary.slices.push((node.clone(), metrics));
        self.advance(now);
        Ok(())
    }

    /// Moves the machine forward: starts, closes and retries rounds as quorums and deadlines allow.
    pub fn advance(&mut self, now: Instant) {
        loop {
            let next = match &mut self.phase {
                Phase::Joining { since } => {
                    let waited = since.is_some_and(|s| now.duration_since(s) >= self.settings.deadline);
                    // Counted, not listed: this runs on every join and task request.
                    let all = self.all_accounted_for();
                    if self.present_count() >= self.quorum() && (all || waited) {
                        if waited && !all {
                            let missing: Vec<NodeName> =
                                self.roster.iter().filter(|n| !self.joined.contains(*n)).cloned().collect();
                            self.mark_absent(missing, "join", now);
                        }
                        Some(self.start_round(now))
                    } else {
                        None
                    }
                }
                Phase::Backoff { until } => (now >= *until).then_some(Phase::Joining { since: Some(now) }),
                Phase::Training(t) if t.secure.is_some() => {
                    let round = t.round;
                    let mut secure_events = Vec::new();
                    let outcome = match t.secure.as_mut() {
                        Some(s) => s.step(now, &t.answered, self.settings.min_clients, &mut secure_events),
                        None => Outcome::Pending,
                    };
                    for e in secure_events {
                        self.events.push(match e {
                            SecureEvent::KeyHoldersFixed(key_holders) => Event::KeyHoldersFixed { round, key_holders },
                            SecureEvent::ParticipantsAnnounced(participants) => {
                                Event::ParticipantsAnnounced { round, participants }
                            }
                            SecureEvent::DecryptionRequested(responders) => {
                                Event::DecryptionRequested { round, responders }
                            }
                        });
                    }
                    let missed: Vec<NodeName> = match (&outcome, t.secure.as_ref()) {
                        (Outcome::Failed { .. }, Some(s)) => s.waiting_for(&t.answered).0,
                        (Outcome::Decoded { .. }, _) => t.selected.difference(&t.answered).cloned().collect(),
                        _ => Vec::new(),
                    };
                    self.mark_absent(missed, "training", now);
                    let Phase::Training(t) = &mut self.phase else { break };
                    match outcome {
                        Outcome::Pending => None,
                        Outcome::Failed { stage, got, required, reason } => {
                            let reason = format!("secure {stage} stage: {reason} ({got} of {required})");
                            Some(self.fail(round, got, required, reason, now))
                        }
                        Outcome::Decoded { sum, record } => {
                            t.sum = sum;
                            t.secure_record = Some(record);
                            Some(self.aggregate(now))
                        }
                    }
                }
                Phase::Training(t) => {
                    let all_answered = t.answered.len() == t.selected.len();
                    if !(all_answered || now >= t.deadline) {
                        None
                    } else {
                        // Whoever has not answered when the deadline closes the round is absent from now on.
                        let missed: Vec<NodeName> = t.selected.difference(&t.answered).cloned().collect();
                        let (round, updates, required) = (t.round, t.contributors.len(), self.settings.min_clients);
                        self.mark_absent(missed, "training", now);
                        if updates >= required {
                            Some(self.aggregate(now))
                        } else {
                            let reason = format!("{updates} of {required} required updates");
                            Some(self.fail(round, updates, required, reason, now))
                        }
                    }
                }
                Phase::Evaluating(e) => {
                    if e.expected.is_empty() || now >= e.deadline {
                        let missed: Vec<NodeName> = e.expected.iter().cloned().collect();
                        self.mark_absent(missed, "evaluation", now);
                        Some(self.finish_evaluation(now))
                    } else {
                        None
                    }
                }
                Phase::Finished => None,
            };
            match next {
                Some(phase) => self.phase = phase,
                None => break,
            }
        }
    }

    fn start_round(&mut self, now: Instant) -> Phase {
        let round = Round(self.completed.0 + 1);
        let selected = self.sample_present();
        let weights = self.influence().weights(&selected, &self.examples);
        let secure = match &self.secure {
            Some(settings) => {
                let start = RoundStart {
                    federation: &self.federation_id,
                    selected: &selected,
                    bindings: &self.bindings,
                    weights: &weights,
                    model: &self.global,
                };
                match SecureRound::start(settings, start, &mut self.rng, now, self.settings.deadline) {
                    Ok(s) => Some(s),
                    Err(err) => {
                        // Unreachable with a configuration the coordinator accepted at bind; never
                        // fall back to plaintext.
                        tracing::error!(round = round.0, "cannot start a secure round: {err}");
                        self.events.push(Event::Finished { version: self.version });
                        return Phase::Finished;
                    }
                }
            }
            None => None,
        };
        self.events.push(Event::RoundStarted { round, selected: selected.clone() });
        Phase::Training(Training {
            round,
            selected: selected.into_iter().collect(),
            answered: BTreeSet::new(),
            contributors: Vec::new(),
            declined: Vec::new(),
            losses: Vec::new(),
            sum: WeightedSum::new(self.global.len()),
            individual: self.strategy.needs_individual_updates().then(Vec::new),
            weights,
            deadline: now + self.settings.deadline,
            secure,
            secure_record: None,
        })
    }

    fn aggregate(&mut self, now: Instant) -> Phase {
        let Phase::Training(mut t) = std::mem::replace(&mut self.phase, Phase::Finished) else {
            return Phase::Finished;
        };
        let next = match &t.individual {
            Some(all) => self.strategy.aggregate_individual(&self.global, all),
            None => self.strategy.aggregate(&self.global, &t.sum),
        };
        match next {
            Ok(next) => {
                self.global = next;
                self.version = ModelVersion(self.version.0 + 1);
                self.failures = 0;
            }
            Err(err) => {
                let updates = t.contributors.len();
                return self.fail(
                    t.round,
                    updates,
                    self.settings.min_clients,
                    format!("aggregation failed: {err}"),
                    now,
                );
            }
        }
        // Summed in a fixed order, so the figure does not depend on the order the uploads arrived in.
        t.losses.sort_by(f64::total_cmp);
        let train_loss =
            if t.losses.is_empty() { f64::NAN } else { t.losses.iter().sum::<f64>() / t.losses.len() as f64 };
        self.events.push(Event::Aggregated {
            round: t.round,
            version: self.version,
            contributors: t.contributors.clone(),
            train_loss,
        });
        Phase::Evaluating(Evaluating {
            summary: RoundSummary {
                round: t.round,
                version: self.version,
                contributors: t.contributors,
                declined: t.declined,
                train_loss,
                metrics: None,
                slices: Vec::new(),
                secure: t.secure_record,
            },
            expected: self.sample_present().into_iter().collect(),
            deadline: now + self.settings.deadline,
        })
    }

    /// A failed attempt at `round`: back off (1 s, doubling, at most the round deadline) and try again, or stop
    /// once the round has failed [`RoundSettings::max_round_failures`] times in a row.
    fn fail(&mut self, round: Round, updates: usize, required: usize, reason: String, now: Instant) -> Phase {
        self.failures += 1;
        if self.failures >= self.settings.max_round_failures {
            let stopped = Stopped { round, failures: self.failures, reason };
            tracing::error!(round = round.0, "federation stopped: {stopped}");
            self.stopped = Some(stopped.clone());
            self.events.push(Event::Stopped(stopped));
            return Phase::Finished;
        }
        let retry_in = Duration::from_secs(1 << (self.failures - 1).min(20)).min(self.settings.deadline);
        tracing::warn!(
            round = round.0,
            "round failed ({reason}); retrying in {} s (failure {} of at most {})",
            retry_in.as_secs_f64(),
            self.failures,
            self.settings.max_round_failures
        );
        self.events.push(Event::RoundFailed { round, updates, required, retry_in });
        Phase::Backoff { until: now + retry_in }
    }

    fn finish_evaluation(&mut self, now: Instant) -> Phase {
        let Phase::Evaluating(mut e) = std::mem::replace(&mut self.phase, Phase::Finished) else {
            return Phase::Finished;
        };
        // In node order, not arrival order: the pooled figures are then the same however the reports raced.
        e.summary.slices.sort_by(|(a, _), (b, _)| a.cmp(b));
        // Pooled like the updates, by the bounded weights of the reporting nodes, never by a count in a report.
        let weights = self.influence().weights(e.summary.slices.iter().map(|(n, _)| n), &self.examples);
        for (node, m) in &mut e.summary.slices {
            m.examples = weights.of(node).round().max(1.0) as u64;
        }
        let slices: Vec<(String, EvalMetrics)> =
            e.summary.slices.iter().map(|(n, m)| (n.0.clone(), m.clone())).collect();
        e.summary.metrics = cohort_core::metrics::weighted_aggregate(&slices).ok();
        self.completed = e.summary.round;
        self.history.push(e.summary.clone());
        self.events.push(Event::Evaluated(Box::new(e.summary)));
        if self.completed.0 >= self.settings.rounds {
            self.events.push(Event::Finished { version: self.version });
            Phase::Finished
        } else {
            Phase::Joining { since: Some(now) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::FedAvg;

    /// A machine weighting by the join counts with no share cap (the share cap has its own tests).
    fn machine(roster: &[&str], min: usize, rounds: u64) -> RoundMachine {
        machine_with(roster, min, rounds, InfluenceSection { max_share: 1.0, ..InfluenceSection::default() })
    }

    fn machine_with(roster: &[&str], min: usize, rounds: u64, influence: InfluenceSection) -> RoundMachine {
        let settings = RoundSettings {
            rounds,
            min_clients: min,
            deadline: Duration::from_secs(10),
            clients_per_round: None,
            max_round_failures: 3,
            influence,
        };
        RoundMachine::new(
            "f",
            roster.iter().map(|n| NodeName::from(*n)),
            settings,
            Box::new(FedAvg),
            vec![0.0, 0.0],
            Round(0),
            ModelVersion(0),
        )
    }

    fn metrics(acc: f64, n: u64) -> EvalMetrics {
        EvalMetrics { examples: n, values: [("accuracy".to_owned(), acc)].into() }
    }

    #[test]
    fn a_round_runs_from_join_to_evaluation() {
        let now = Instant::now();
        let (a, b) = (NodeName::from("a"), NodeName::from("b"));
        let mut m = machine(&["a", "b"], 2, 1);
        // The nodes' (noisy) join counts are their weights.
        m.announce(&a, None, 1.0).unwrap();
        m.announce(&b, None, 2.0).unwrap();
        m.join(&a, now).unwrap();
        assert_eq!(m.task_for(&a, now).unwrap(), Task::Wait);
        m.join(&b, now).unwrap();
        assert_eq!(m.task_for(&a, now).unwrap(), Task::Train { round: Round(1), version: ModelVersion(0) });
        m.submit_update(&a, Round(1), ModelVersion(0), &[1.0, 0.0], 0.5, now).unwrap();
        assert_eq!(m.task_for(&a, now).unwrap(), Task::Wait);
        m.submit_update(&b, Round(1), ModelVersion(0), &[4.0, 3.0], 0.5, now).unwrap();
        assert_eq!(m.global(), &[3.0, 2.0]);
        assert_eq!(m.task_for(&b, now).unwrap(), Task::Evaluate { round: Round(1), version: ModelVersion(1) });
        m.report_evaluation(&a, Round(1), ModelVersion(1), metrics(1.0, 30), now).unwrap();
        m.report_evaluation(&b, Round(1), ModelVersion(1), metrics(0.6, 10), now).unwrap();
        assert!(m.is_finished());
        let summary = &m.history()[0];
        // Pooled by the join counts 1 and 2, not by the 30 and 10 the reports claim.
        assert!((summary.metrics.as_ref().unwrap().get("accuracy").unwrap() - 2.2 / 3.0).abs() < 1e-12);
        assert_eq!(summary.slices.len(), 2);
        assert_eq!(m.task_for(&a, now).unwrap(), Task::Finished { version: ModelVersion(1) });
    }

    /// Problem 2 of the reliability issue: one hospital claims 2^63 examples, uploads a huge update and reports
    /// a perfect accuracy. Its update is refused for its norm; its honest-sized update and its report then
    /// count for at most half of the pooled figures (the default share cap), not for all of them.
    #[test]
    fn a_poisoning_node_moves_the_model_and_the_metric_by_at_most_its_share() {
        let now = Instant::now();
        let names = ["liar", "h1", "h2"];
        let [liar, h1, h2] = names.map(NodeName::from);
        let mut m = machine_with(&names, 2, 1, InfluenceSection::default());
        m.announce(&liar, None, 2f64.powi(63)).unwrap();
        m.announce(&h1, None, 100.0).unwrap();
        m.announce(&h2, None, 100.0).unwrap();
        for n in [&liar, &h1, &h2] {
            m.join(n, now).unwrap();
        }
        let refused = m.submit_update(&liar, Round(1), ModelVersion(0), &[1e6, 1e6], 0.5, now).unwrap_err();
        assert!(matches!(refused, RoundError::TooLarge(_)), "{refused}");
        m.submit_update(&liar, Round(1), ModelVersion(0), &[7.0, 7.0], 0.5, now).unwrap();
        m.submit_update(&h1, Round(1), ModelVersion(0), &[1.0, 0.0], 0.5, now).unwrap();
        m.submit_update(&h2, Round(1), ModelVersion(0), &[0.0, 1.0], 0.5, now).unwrap();
        // The liar's weight is capped at the honest total (200): half of the mean.
        assert_eq!(m.global(), &[3.75, 3.75]);
        m.report_evaluation(&liar, Round(1), ModelVersion(1), metrics(1.0, 1_000_000), now).unwrap();
        m.report_evaluation(&h1, Round(1), ModelVersion(1), metrics(0.4, 100), now).unwrap();
        m.report_evaluation(&h2, Round(1), ModelVersion(1), metrics(0.5, 100), now).unwrap();
        let pooled = m.history()[0].metrics.as_ref().unwrap().get("accuracy").unwrap();
        assert!((pooled - (0.5 * 1.0 + 0.5 * 0.45)).abs() < 1e-12, "pooled accuracy {pooled}");
    }

    /// Under uniform weighting the counts play no part at all.
    #[test]
    fn uniform_weighting_ignores_the_join_counts() {
        let now = Instant::now();
        let (a, b) = (NodeName::from("a"), NodeName::from("b"));
        let uniform =
            InfluenceSection { weighting: cohort_core::config::Weighting::Uniform, ..InfluenceSection::default() };
        let mut m = machine_with(&["a", "b"], 2, 1, uniform);
        m.announce(&a, None, 1.0).unwrap();
        m.announce(&b, None, 1e6).unwrap();
        m.join(&a, now).unwrap();
        m.join(&b, now).unwrap();
        m.submit_update(&a, Round(1), ModelVersion(0), &[1.0, 0.0], 0.5, now).unwrap();
        m.submit_update(&b, Round(1), ModelVersion(0), &[3.0, 2.0], 0.5, now).unwrap();
        assert_eq!(m.global(), &[2.0, 1.0]);
    }

    #[test]
    fn stale_duplicate_and_foreign_messages_are_typed_errors() {
        let now = Instant::now();
        let (a, b) = (NodeName::from("a"), NodeName::from("b"));
        let mut m = machine(&["a", "b"], 2, 3);
        assert_eq!(m.join(&NodeName::from("x"), now), Err(RoundError::NotInRoster(NodeName::from("x"))));
        assert!(matches!(m.check_federation("other"), Err(RoundError::WrongFederation { .. })));
        m.join(&a, now).unwrap();
        m.join(&b, now).unwrap();
        assert!(matches!(
            m.submit_update(&a, Round(2), ModelVersion(0), &[0.0, 0.0], 0.0, now),
            Err(RoundError::WrongRound { .. })
        ));
        assert!(matches!(
            m.submit_update(&a, Round(1), ModelVersion(7), &[0.0, 0.0], 0.0, now),
            Err(RoundError::WrongModelVersion { .. })
        ));
        assert!(matches!(
            m.submit_update(&a, Round(1), ModelVersion(0), &[0.0], 0.0, now),
            Err(RoundError::BadUpdate(_))
        ));
        m.submit_update(&a, Round(1), ModelVersion(0), &[0.0, 0.0], 0.0, now).unwrap();
        assert_eq!(
            m.submit_update(&a, Round(1), ModelVersion(0), &[0.0, 0.0], 0.0, now),
            Err(RoundError::Duplicate(a.clone()))
        );
        assert!(matches!(
            m.report_evaluation(&a, Round(1), ModelVersion(0), metrics(1.0, 1), now),
            Err(RoundError::Unexpected(_))
        ));
    }

    #[test]
    fn a_sampled_round_trains_and_evaluates_on_samples_of_its_size() {
        let now = Instant::now();
        let names: Vec<NodeName> = ["a", "b", "c", "d", "e", "f"].map(NodeName::from).to_vec();
        let mut m = machine(&["a", "b", "c", "d", "e", "f"], 1, 1);
        m.settings.clients_per_round = Some(2);
        for n in &names {
            m.join(n, now).unwrap();
        }
        let asked = |m: &mut RoundMachine, task: fn(&Task) -> bool| -> Vec<NodeName> {
            names.iter().filter(|n| task(&m.task_for(n, now).unwrap())).cloned().collect()
        };
        let trainers = asked(&mut m, |t| matches!(t, Task::Train { .. }));
        assert_eq!(trainers.len(), 2);
        for n in &trainers {
            m.submit_update(n, Round(1), ModelVersion(0), &[1.0, 1.0], 0.0, now).unwrap();
        }
        let evaluators = asked(&mut m, |t| matches!(t, Task::Evaluate { .. }));
        assert_eq!(evaluators.len(), 2, "not every present node: {evaluators:?}");
        for n in &evaluators {
            m.report_evaluation(n, Round(1), ModelVersion(1), metrics(0.5, 10), now).unwrap();
        }
        assert!(m.is_finished());
        assert_eq!(m.history()[0].slices.len(), 2);
    }

    #[test]
    fn deadline_closes_with_quorum_and_retries_without() {
        let now = Instant::now();
        let (a, b, c) = (NodeName::from("a"), NodeName::from("b"), NodeName::from("c"));
        let mut m = machine(&["a", "b", "c"], 2, 5);
        for n in [&a, &b, &c] {
            m.join(n, now).unwrap();
        }
        m.submit_update(&a, Round(1), ModelVersion(0), &[1.0, 1.0], 0.0, now).unwrap();
        let waiting = m.waiting().unwrap();
        assert_eq!((waiting.round, waiting.phase.as_str()), (Round(1), "training"));
        assert_eq!(waiting.nodes, [(b.clone(), None), (c.clone(), None)]);
        assert_eq!(waiting.deadline, Some(now + Duration::from_secs(10)));
        let closed = now + Duration::from_secs(11);
        m.advance(closed);
        // One update is below the quorum of two: the round backs off for 1 s and is retried under the same
        // number; b and c missed the deadline and are absent.
        let events = m.drain_events();
        let one_second = Duration::from_secs(1);
        assert!(events.iter().any(|e| matches!(e,
            Event::RoundFailed { round: Round(1), updates: 1, required: 2, retry_in } if *retry_in == one_second)));
        assert!(events.iter().any(|e| matches!(e, Event::NodeAbsent { node, phase: "training" } if *node == b)));
        assert_eq!(m.absent().keys().cloned().collect::<Vec<_>>(), [b.clone(), c.clone()]);
        assert_eq!(m.phase_name(), "backoff");
        assert_eq!(m.version(), ModelVersion(0));
        // Absent nodes come back by asking for a task; the retry after the backoff then selects all three.
        let during = closed + one_second / 2;
        assert_eq!(m.task_for(&b, during).unwrap(), Task::Wait, "backing off");
        assert_eq!(m.task_for(&c, during).unwrap(), Task::Wait, "backing off");
        assert!(m.drain_events().iter().any(|e| matches!(e, Event::NodeReturned(n) if *n == b)));
        assert!(m.absent().is_empty());
        let later = closed + one_second;
        assert_eq!(m.task_for(&c, later).unwrap(), Task::Train { round: Round(1), version: ModelVersion(0) });
        m.submit_update(&a, Round(1), ModelVersion(0), &[1.0, 1.0], 0.0, later).unwrap();
        m.decline(&c, Round(1), ModelVersion(0), "over budget", later).unwrap();
        m.submit_update(&b, Round(1), ModelVersion(0), &[3.0, 3.0], 0.0, later).unwrap();
        assert_eq!(m.version(), ModelVersion(1));
        assert_eq!(m.global(), &[2.0, 2.0]);
    }

    #[test]
    fn a_round_that_keeps_failing_backs_off_then_stops() {
        let mut now = Instant::now();
        let (a, b) = (NodeName::from("a"), NodeName::from("b"));
        let mut m = machine(&["a", "b"], 2, 5);
        m.join(&a, now).unwrap();
        m.join(&b, now).unwrap();
        let mut started = 0;
        // Both nodes decline every attempt (say, over budget): without a backoff this would retry in a hot loop.
        for (attempt, backoff) in [(1, 1), (2, 2), (3, 0)] {
            assert_eq!(m.task_for(&a, now).unwrap(), Task::Train { round: Round(1), version: ModelVersion(0) });
            m.decline(&a, Round(1), ModelVersion(0), "over budget", now).unwrap();
            m.decline(&b, Round(1), ModelVersion(0), "over budget", now).unwrap();
            let events = m.drain_events();
            started += events.iter().filter(|e| matches!(e, Event::RoundStarted { .. })).count();
            if attempt < 3 {
                assert_eq!(m.phase_name(), "backoff", "attempt {attempt}");
                // Half-way through the backoff nothing is asked of anyone.
                now += Duration::from_millis(500 * backoff);
                assert_eq!(m.task_for(&a, now).unwrap(), Task::Wait);
                now += Duration::from_millis(500 * backoff);
            } else {
                let stopped = m.stopped().expect("the federation stopped").clone();
                assert_eq!((stopped.round, stopped.failures), (Round(1), 3));
                assert!(stopped.reason.contains("0 of 2"), "{stopped}");
                assert!(events.iter().any(|e| matches!(e, Event::Stopped(s) if *s == stopped)));
            }
        }
        assert_eq!(started, 3, "one start per attempt");
        assert!(m.is_finished());
        assert_eq!(m.version(), ModelVersion(0));
    }

    #[test]
    fn absent_nodes_are_not_waited_for_and_rejoin_when_they_return() {
        let now = Instant::now();
        let (a, b, c) = (NodeName::from("a"), NodeName::from("b"), NodeName::from("c"));
        let mut m = machine(&["a", "b", "c"], 2, 3);
        for n in [&a, &b, &c] {
            m.join(n, now).unwrap();
        }
        m.submit_update(&a, Round(1), ModelVersion(0), &[1.0, 1.0], 0.0, now).unwrap();
        m.submit_update(&b, Round(1), ModelVersion(0), &[1.0, 1.0], 0.0, now).unwrap();
        // c never answers: at the deadline the round closes with a and b, and c is absent.
        let t1 = now + Duration::from_secs(10);
        m.advance(t1);
        assert_eq!(m.version(), ModelVersion(1));
        assert_eq!(m.absent().get(&c), Some(&t1));
        // The evaluation does not wait for c, and round 2 starts as soon as a and b reported.
        assert_eq!(m.waiting().unwrap().nodes, [(a.clone(), None), (b.clone(), None)]);
        m.report_evaluation(&a, Round(1), ModelVersion(1), metrics(0.9, 1), t1).unwrap();
        m.report_evaluation(&b, Round(1), ModelVersion(1), metrics(0.9, 1), t1).unwrap();
        assert_eq!(m.task_for(&a, t1).unwrap(), Task::Train { round: Round(2), version: ModelVersion(1) });
        // c returns mid-round: it is not in round 2, but round 3 selects it again.
        assert_eq!(m.task_for(&c, t1).unwrap(), Task::Wait);
        assert!(m.absent().is_empty());
        m.submit_update(&a, Round(2), ModelVersion(1), &[1.0, 1.0], 0.0, t1).unwrap();
        m.submit_update(&b, Round(2), ModelVersion(1), &[1.0, 1.0], 0.0, t1).unwrap();
        for n in [&a, &b, &c] {
            m.report_evaluation(n, Round(2), ModelVersion(2), metrics(0.9, 1), t1).unwrap();
        }
        assert_eq!(m.task_for(&c, t1).unwrap(), Task::Train { round: Round(3), version: ModelVersion(2) });
    }

    #[test]
    fn a_roster_node_that_never_joins_is_waited_for_once() {
        let now = Instant::now();
        let (a, b) = (NodeName::from("a"), NodeName::from("b"));
        let mut m = machine(&["a", "b", "c"], 2, 3);
        m.join(&a, now).unwrap();
        m.join(&b, now).unwrap();
        let waiting = m.waiting().unwrap();
        assert_eq!((waiting.phase.as_str(), waiting.nodes.len()), ("joining", 1));
        assert_eq!(m.task_for(&a, now).unwrap(), Task::Wait, "the first round waits for c");
        let t1 = now + Duration::from_secs(10);
        assert_eq!(m.task_for(&a, t1).unwrap(), Task::Train { round: Round(1), version: ModelVersion(0) });
        assert!(m.absent().contains_key(&NodeName::from("c")));
        for n in [&a, &b] {
            m.submit_update(n, Round(1), ModelVersion(0), &[1.0, 1.0], 0.0, t1).unwrap();
        }
        for n in [&a, &b] {
            m.report_evaluation(n, Round(1), ModelVersion(1), metrics(0.9, 1), t1).unwrap();
        }
        assert_eq!(m.task_for(&a, t1).unwrap(), Task::Train { round: Round(2), version: ModelVersion(1) }, "not again");
    }
}

//! The secure-aggregation sub-state machine of one round (threshold RLWE, see `cohort_crypto`).
//!
//! No I/O and no ring arithmetic of its own: it relays opaque share envelopes, feeds complete client
//! bodies to [`cohort_crypto::Aggregator`], picks the responders, and hands the partial decryptions
//! to [`cohort_crypto::combine`]. Stages, each with its own deadline:
//! 1. **Sharing**: the selected participants submit one sealed share per other participant. The
//!    stage closes when every participant shared or declined, or at the deadline with enough
//!    sharers; the sharers become the round's key holders.
//! 2. **Uploading**: key holders upload their encrypted bodies. A body is added to the sum only once
//!    it is complete and valid, so a half upload never poisons the aggregate.
//! 3. **Decrypting**: the participant set `S` (complete uploads) is announced; the first `t` key
//!    holders that ask for work become the responders `R`, each gets the same
//!    [`DecryptionRequest`]; when all `t` partials are in, the sum is decoded.

use crate::influence::Weights;
use crate::strategy::WeightedSum;
use cohort_core::NodeName;
use cohort_core::binding::SignedBinding;
use cohort_crypto::announce::collusion_policy;
use cohort_crypto::{
    AggregateBody, Aggregator, AnnouncedParticipant, Consent, DecryptionRequest, MaskSeed, NodePublicKeys,
    ParamsSummary, PartialDecryption, ParticipantId, RoundAnnouncement, RoundId, SecAggContext, SecAggParams, combine,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A secure-aggregation message the coordinator refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecureError {
    /// The federation does not run secure aggregation, or this round has no secure state.
    #[error("secure aggregation is not enabled in this federation")]
    Disabled,
    /// A plaintext update in a federation that runs secure aggregation.
    #[error("this federation runs secure aggregation: plaintext updates are refused")]
    PlaintextRefused,
    /// The node joined without the public keys secure aggregation needs, or without their binding to its
    /// certificate.
    #[error("node {0} joined without secure-aggregation keys bound to its certificate")]
    MissingKeys(NodeName),
    /// The node's signature over the round announcement does not verify.
    #[error("node {0} sent an invalid consent signature for this round's announcement")]
    BadConsent(NodeName),
    /// The message belongs to another stage of the round.
    #[error("no {what} is expected in the {stage} stage")]
    WrongStage {
        /// What was sent.
        what: &'static str,
        /// The current stage.
        stage: &'static str,
    },
    /// The node is not a participant of this secure round.
    #[error("node {0} is not a participant of this secure round")]
    NotParticipant(NodeName),
    /// The node already did this.
    #[error("node {node} already sent its {what}")]
    Duplicate {
        /// The node.
        node: NodeName,
        /// What it sent twice.
        what: &'static str,
    },
    /// The node's shares did not arrive in time: it holds no key shares this round.
    #[error("node {0} is not a key holder of this round")]
    NotAKeyHolder(NodeName),
    /// The share submission is malformed.
    #[error("invalid share submission: {0}")]
    BadShares(String),
    /// The encrypted body is malformed.
    #[error("invalid encrypted body: {0}")]
    BadBody(String),
    /// The node is not one of the round's responders.
    #[error("node {0} is not a responder of this round's decryption request")]
    NotAResponder(NodeName),
    /// The partial decryption is malformed.
    #[error("invalid partial decryption: {0}")]
    BadPartial(String),
    /// The configuration cannot run a secure round.
    #[error("secure aggregation configuration: {0}")]
    Config(String),
}

/// Secure-aggregation policy and parameters of a federation.
///
/// The policy follows from `max_colluders` = c ([`collusion_policy`]): a round of n participants uses the
/// threshold t = ⌊(n + c)/2⌋ + 1 (or a larger configured one), so honest key holders, who answer one request
/// per round, never allow two different decryptions; and it decrypts only sets of at least
/// `min_participants` ≥ c + 2 members, so every sum holds at least two honest updates.
#[derive(Debug, Clone)]
pub struct SecureSettings {
    ctx: SecAggContext,
    max_colluders: usize,
    threshold: Option<usize>,
    min_participants: usize,
}

impl SecureSettings {
    /// Settings with the parameters `params`, `max_colluders` c, an optional explicit threshold (at least the
    /// derived one in every round) and an optional `min_participants` (at least c + 2).
    ///
    /// # Errors
    /// [`SecureError::Config`] for parameters that do not build or a policy below the collusion bounds.
    pub fn new(
        params: &SecAggParams,
        max_colluders: usize,
        threshold: Option<usize>,
        min_participants: Option<usize>,
    ) -> Result<Self, SecureError> {
        let ctx = params.build().map_err(|e| SecureError::Config(e.to_string()))?;
        let min_participants = min_participants.unwrap_or(max_colluders + 2);
        if min_participants < max_colluders + 2 {
            return Err(SecureError::Config(format!(
                "min_participants is {min_participants}; with max_colluders = {max_colluders} it must be at least {}, or a \
                 decrypted sum could hold a single honest update",
                max_colluders + 2
            )));
        }
        Ok(Self { ctx, max_colluders, threshold, min_participants })
    }

    /// The threshold and smallest decryptable set for a round of `n` participants.
    ///
    /// # Errors
    /// [`SecureError::Config`] when no threshold meets the collusion bound for `n` participants.
    pub fn policy_for(&self, n: usize) -> Result<(usize, usize), SecureError> {
        let (t, m) = collusion_policy(n, self.max_colluders).map_err(|e| SecureError::Config(e.to_string()))?;
        let t = self.threshold.map_or(t, |configured| configured.max(t));
        let m = m.max(self.min_participants);
        if t > n || m > n {
            return Err(SecureError::Config(format!(
                "a round of {n} participants cannot meet threshold {t} and min_participants {m}"
            )));
        }
        Ok((t, m))
    }

    /// Checks the policy against the largest round.
    ///
    /// # Errors
    /// [`SecureError::Config`] naming the problem.
    pub fn check_round_size(&self, max_selected: usize) -> Result<(), SecureError> {
        if max_selected > self.ctx.params().max_clients as usize {
            return Err(SecureError::Config(format!(
                "{max_selected} clients per round exceed the parameters' max_clients {}",
                self.ctx.params().max_clients
            )));
        }
        self.policy_for(max_selected).map(|_| ())
    }

    /// The fewest joined clients a secure round can start with.
    pub fn quorum(&self) -> usize {
        self.min_participants.max(self.max_colluders + 2).max(self.threshold.unwrap_or(0))
    }

    /// The parameter context.
    pub fn context(&self) -> &SecAggContext {
        &self.ctx
    }

    /// The minimum participant set size.
    pub fn min_participants(&self) -> usize {
        self.min_participants
    }

    /// How many hospitals may collude with the coordinator.
    pub fn max_colluders(&self) -> usize {
        self.max_colluders
    }

    /// The guarantee, in one line for operators.
    pub fn guarantee(&self) -> String {
        let c = self.max_colluders;
        let colluders = match c {
            0 => "the coordinator alone".to_owned(),
            1 => "the coordinator plus 1 colluding hospital".to_owned(),
            c => format!("the coordinator plus {c} colluding hospitals"),
        };
        format!("secure aggregation: sums of ≥ {} updates; safe against {colluders}", self.min_participants)
    }
}

/// What the registry records about a secure round.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SecureRoundRecord {
    /// The round id of the announcement (never reused).
    #[serde(default)]
    pub round_id: u64,
    /// SHA-256 of the announcement every participant signed, hex.
    #[serde(default)]
    pub announcement_hash: String,
    /// Colluding hospitals the round is safe against.
    #[serde(default)]
    pub max_colluders: usize,
    /// Ring, noise and encoding parameters.
    pub params: ParamsSummary,
    /// Decryption threshold t.
    pub threshold: usize,
    /// Minimum participant set size.
    pub min_participants: usize,
    /// Selected participants.
    pub selected: usize,
    /// Nodes that distributed key shares (the key holders).
    pub key_holders: Vec<NodeName>,
    /// Nodes whose encrypted bodies are in the sum (the set S).
    pub participants: Vec<NodeName>,
    /// Key holders that answered the decryption request (the set R).
    pub responders: Vec<NodeName>,
    /// Public reference example count used for the FedAvg weights.
    pub reference_examples: f64,
}

/// Something the sub-machine did that the round should publish.
#[derive(Debug, Clone, PartialEq)]
pub enum SecureEvent {
    /// Sharing closed; these nodes are the key holders.
    KeyHoldersFixed(Vec<NodeName>),
    /// Uploads closed; these nodes' bodies are in the sum.
    ParticipantsAnnounced(Vec<NodeName>),
    /// The responders are fixed and the decryption request is out.
    DecryptionRequested(Vec<NodeName>),
}

/// Where the round stands after [`SecureRound::step`].
// A transient value, returned once per step and matched at once.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Outcome {
    /// Waiting for messages or a deadline.
    Pending,
    /// The round cannot complete.
    Failed {
        /// The stage that failed.
        stage: &'static str,
        /// How many arrived.
        got: usize,
        /// How many were needed.
        required: usize,
        /// Why.
        reason: String,
    },
    /// The sum is decrypted and decoded.
    Decoded {
        /// The example-weighted sum of deltas (weights in examples, `w_i · n_ref`).
        sum: WeightedSum,
        /// The registry record.
        record: SecureRoundRecord,
    },
}

/// What a key holder should do in the decryption stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Poll {
    /// Nothing (not involved, or waiting for more holders or for the stage).
    Wait,
    /// Answer this request.
    Decrypt(DecryptionRequest),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Sharing,
    Uploading,
    Decrypting,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Sharing => "share distribution",
            Stage::Uploading => "upload",
            Stage::Decrypting => "decryption",
        }
    }
}

/// Envelopes delivered to a key holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The round's key holders.
    pub key_holders: Vec<NodeName>,
    /// `(sender, sealed envelope)` addressed to the caller.
    pub envelopes: Vec<(NodeName, Vec<u8>)>,
}

/// The secure state of one round.
#[derive(Debug)]
pub struct SecureRound {
    ctx: SecAggContext,
    announcement: RoundAnnouncement,
    bindings: Vec<SignedBinding>,
    ids: BTreeMap<NodeName, ParticipantId>,
    len: usize,
    stage: Stage,
    deadline: Instant,
    phase_time: Duration,
    mailbox: BTreeMap<NodeName, Vec<(NodeName, Vec<u8>)>>,
    sharers: BTreeSet<NodeName>,
    consents: BTreeMap<ParticipantId, Consent>,
    holders: BTreeSet<NodeName>,
    aggregator: Option<Aggregator>,
    uploaded: BTreeSet<NodeName>,
    aggregate: Option<AggregateBody>,
    pollers: Vec<NodeName>,
    request: Option<DecryptionRequest>,
    partials: BTreeMap<NodeName, PartialDecryption>,
}

/// What a secure round is started from.
#[derive(Debug, Clone, Copy)]
pub struct RoundStart<'a> {
    /// The federation id.
    pub federation: &'a str,
    /// The selected nodes, in order.
    pub selected: &'a [NodeName],
    /// Each node's keys bound to its certificate.
    pub bindings: &'a BTreeMap<NodeName, SignedBinding>,
    /// The round's bounded weights (examples) over the selected nodes.
    pub weights: &'a Weights,
    /// The global model the round trains.
    pub model: &'a [f32],
}

/// 32 bytes from `rng`.
fn random_bytes(rng: &mut (impl rand::CryptoRng + ?Sized)) -> [u8; 32] {
    let mut out = [0u8; 32];
    rng.fill_bytes(&mut out);
    out
}

impl SecureRound {
    /// Starts a secure round over `start.selected` for the global model `start.model`. The announcement gets a
    /// fresh random round id (never reused, even when the same training round is retried), a fresh nonce, the
    /// model's SHA-256, and every participant's certificate-bound keys; the mask seed, id and nonce come from
    /// the OS CSPRNG.
    ///
    /// # Errors
    /// [`SecureError::MissingKeys`] for a selected node without bound keys; [`SecureError::Config`] when the
    /// collusion policy cannot be met by this round.
    pub fn start(
        settings: &SecureSettings,
        start: RoundStart<'_>,
        rng: &mut (impl rand::CryptoRng + ?Sized),
        now: Instant,
        phase_time: Duration,
    ) -> Result<Self, SecureError> {
        let mut participants = Vec::with_capacity(start.selected.len());
        let mut bindings = Vec::with_capacity(start.selected.len());
        let mut ids = BTreeMap::new();
        for (i, node) in start.selected.iter().enumerate() {
            let id = u32::try_from(i + 1)
                .ok()
                .and_then(ParticipantId::new)
                .ok_or_else(|| SecureError::Config("too many participants".into()))?;
            let binding = start.bindings.get(node).ok_or_else(|| SecureError::MissingKeys(node.clone()))?;
            let keys = NodePublicKeys { x25519: binding.keys.x25519, ed25519: binding.keys.share_ed25519 };
            participants.push(AnnouncedParticipant { name: node.0.clone(), id, keys });
            bindings.push(binding.clone());
            ids.insert(node.clone(), id);
        }
        let n = participants.len();
        let (threshold, min_participants) = settings.policy_for(n)?;
        // n_ref: the largest bounded weight maps to half the largest encodable weight, leaving room for noisy
        // counts; every client caps its own count at the round's weight cap first.
        let reference_examples = start.weights.max() / (settings.ctx.params().max_weight / 2.0);
        let model_sha256 = model_digest(start.model);
        let announcement = RoundAnnouncement {
            federation: start.federation.to_owned(),
            round: RoundId(rng.next_u64()),
            nonce: random_bytes(rng),
            model_sha256,
            seed: MaskSeed(random_bytes(rng)),
            params: settings.ctx.params().clone(),
            threshold,
            min_participants,
            max_colluders: settings.max_colluders,
            reference_examples,
            weight_cap: start.weights.cap,
            model_len: start.model.len(),
            participants,
        };
        announcement.validate().map_err(|e| SecureError::Config(e.to_string()))?;
        Ok(Self {
            ctx: settings.ctx.clone(),
            announcement,
            bindings,
            ids,
            len: start.model.len() + 1,
            stage: Stage::Sharing,
            deadline: now + phase_time,
            phase_time,
            mailbox: BTreeMap::new(),
            sharers: BTreeSet::new(),
            consents: BTreeMap::new(),
            holders: BTreeSet::new(),
            aggregator: None,
            uploaded: BTreeSet::new(),
            aggregate: None,
            pollers: Vec::new(),
            request: None,
            partials: BTreeMap::new(),
        })
    }

    /// The participants' certificates and key-binding signatures, relayed with the announcement so that every
    /// client can check each participant's keys itself.
    pub fn bindings(&self) -> &[SignedBinding] {
        &self.bindings
    }

    /// The public round data sent with the training task.
    pub fn announcement(&self) -> &RoundAnnouncement {
        &self.announcement
    }

    /// The stage name, for messages.
    pub fn stage_name(&self) -> &'static str {
        self.stage.name()
    }

    /// The nodes the current stage still waits for (`answered`: the selected nodes that uploaded or
    /// declined), and the stage's deadline.
    pub fn waiting_for(&self, answered: &BTreeSet<NodeName>) -> (Vec<NodeName>, Instant) {
        let open = |n: &&NodeName| !answered.contains(*n);
        let nodes = match self.stage {
            Stage::Sharing => self.ids.keys().filter(open).filter(|n| !self.sharers.contains(*n)).cloned().collect(),
            Stage::Uploading => {
                self.holders.iter().filter(open).filter(|n| !self.uploaded.contains(*n)).cloned().collect()
            }
            Stage::Decrypting if self.request.is_some() => {
                self.pollers.iter().filter(|n| !self.partials.contains_key(*n)).cloned().collect()
            }
            Stage::Decrypting => self.holders.iter().filter(|n| !self.pollers.contains(n)).cloned().collect(),
        };
        (nodes, self.deadline)
    }

    /// When the current stage closes, whatever has arrived by then.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether `node` has submitted its shares.
    pub fn has_shared(&self, node: &NodeName) -> bool {
        self.sharers.contains(node)
    }

    fn threshold(&self) -> usize {
        self.announcement.threshold
    }

    fn expect(&self, stage: Stage, what: &'static str) -> Result<(), SecureError> {
        if self.stage != stage {
            return Err(SecureError::WrongStage { what, stage: self.stage.name() });
        }
        Ok(())
    }

    /// Stores `node`'s sealed shares (exactly one opaque envelope per other participant) and its consent: its
    /// signature over the announcement's hash, which key holders require of every member of a decrypted set.
    ///
    /// # Errors
    /// [`SecureError`] for the wrong stage, a non-participant, a second submission, an invalid consent, or a
    /// malformed set of envelopes; nothing is stored then.
    pub fn submit_shares(
        &mut self,
        node: &NodeName,
        envelopes: Vec<(NodeName, Vec<u8>)>,
        consent: &[u8],
    ) -> Result<(), SecureError> {
        self.expect(Stage::Sharing, "share submission")?;
        let Some(&participant) = self.ids.get(node) else {
            return Err(SecureError::NotParticipant(node.clone()));
        };
        if self.sharers.contains(node) {
            return Err(SecureError::Duplicate { node: node.clone(), what: "shares" });
        }
        let signature: [u8; 64] = consent.try_into().map_err(|_| SecureError::BadConsent(node.clone()))?;
        let consent = Consent { participant, signature };
        self.announcement.verify_consent(&consent).map_err(|_| SecureError::BadConsent(node.clone()))?;
        let max = self.ctx.max_sealed_len();
        let mut recipients = BTreeSet::new();
        for (to, blob) in &envelopes {
            if to == node || !self.ids.contains_key(to) {
                return Err(SecureError::BadShares(format!(
                    "envelope addressed to {to}, who is not another participant"
                )));
            }
            if !recipients.insert(to.clone()) {
                return Err(SecureError::BadShares(format!("two envelopes for {to}")));
            }
            if blob.len() > max {
                return Err(SecureError::BadShares(format!(
                    "envelope for {to} has {} bytes, at most {max} expected",
                    blob.len()
                )));
            }
        }
        if recipients.len() + 1 != self.ids.len() {
            return Err(SecureError::BadShares(format!(
                "{} envelopes for {} other participants",
                recipients.len(),
                self.ids.len() - 1
            )));
        }
        for (to, blob) in envelopes {
            self.mailbox.entry(to).or_default().push((node.clone(), blob));
        }
        self.consents.insert(participant, consent);
        self.sharers.insert(node.clone());
        Ok(())
    }

    /// The envelopes addressed to `node`, once sharing has closed (`None` while it is open).
    ///
    /// # Errors
    /// [`SecureError::NotParticipant`], or [`SecureError::NotAKeyHolder`] for a participant whose
    /// shares did not arrive in time.
    pub fn shares_for(&self, node: &NodeName) -> Result<Option<Delivery>, SecureError> {
        if !self.ids.contains_key(node) {
            return Err(SecureError::NotParticipant(node.clone()));
        }
        if self.stage == Stage::Sharing {
            return Ok(None);
        }
        if !self.holders.contains(node) {
            return Err(SecureError::NotAKeyHolder(node.clone()));
        }
        let envelopes = self
            .mailbox
            .get(node)
            .map(|all| all.iter().filter(|(from, _)| self.holders.contains(from)).cloned().collect())
            .unwrap_or_default();
        Ok(Some(Delivery { key_holders: self.holders.iter().cloned().collect(), envelopes }))
    }

    /// Checks that `node` may upload its encrypted bodies now.
    ///
    /// # Errors
    /// [`SecureError`] for the wrong stage, a node that is not a key holder, or a second upload.
    pub fn check_upload(&self, node: &NodeName) -> Result<(), SecureError> {
        self.expect(Stage::Uploading, "encrypted upload")?;
        if !self.holders.contains(node) {
            return Err(SecureError::NotAKeyHolder(node.clone()));
        }
        if self.uploaded.contains(node) {
            return Err(SecureError::Duplicate { node: node.clone(), what: "encrypted upload" });
        }
        Ok(())
    }

    /// The number of `u64` residues an upload (or a partial decryption) must carry: the model and its weight
    /// coordinate, packed and in RNS form ([`SecAggContext::body_len`]).
    pub fn body_len(&self) -> usize {
        self.ctx.body_len(self.announcement.model_len)
    }

    /// Adds `node`'s complete body vector to the sum. All checks happen first: a refused body
    /// leaves the sum unchanged.
    ///
    /// # Errors
    /// As [`SecureRound::check_upload`]; [`SecureError::BadBody`] for a wrong length or an
    /// unreduced coefficient.
    pub fn add_upload(&mut self, node: &NodeName, bodies: &[u64]) -> Result<(), SecureError> {
        self.check_upload(node)?;
        self.ctx.check_body(self.announcement.model_len, bodies).map_err(|e| SecureError::BadBody(e.to_string()))?;
        let id = self.ids.get(node).copied().ok_or_else(|| SecureError::NotParticipant(node.clone()))?;
        let aggregator = self.aggregator.get_or_insert_with(|| Aggregator::new(&self.ctx, self.len));
        aggregator.add_client(id, bodies).map_err(|e| SecureError::BadBody(e.to_string()))?;
        self.uploaded.insert(node.clone());
        Ok(())
    }

    /// A key holder asks for work in the decryption stage. The first `t` holders to ask become the
    /// responders. Returns the task and whether this call fixed the responder set.
    pub fn poll(&mut self, node: &NodeName) -> (Poll, bool) {
        if self.stage != Stage::Decrypting || !self.holders.contains(node) {
            return (Poll::Wait, false);
        }
        let mut fixed_now = false;
        if self.request.is_none() {
            if !self.pollers.contains(node) {
                self.pollers.push(node.clone());
            }
            if self.pollers.len() >= self.threshold() {
                let participants: Vec<ParticipantId> =
                    self.aggregate.as_ref().map(|a| a.participants().to_vec()).unwrap_or_default();
                let consents = participants.iter().filter_map(|p| self.consents.get(p).cloned()).collect();
                let responders = self.pollers.iter().filter_map(|n| self.ids.get(n).copied()).collect();
                self.request = Some(DecryptionRequest {
                    round: self.announcement.round,
                    announcement: self.announcement.hash(),
                    participants,
                    consents,
                    responders,
                    len: self.len,
                });
                fixed_now = true;
            }
        }
        match &self.request {
            Some(request) if self.pollers.contains(node) && !self.partials.contains_key(node) => {
                (Poll::Decrypt(request.clone()), fixed_now)
            }
            _ => (Poll::Wait, fixed_now),
        }
    }

    /// Checks that `node` may submit its partial decryption now.
    ///
    /// # Errors
    /// [`SecureError`] for the wrong stage, a node that is not a responder, or a second partial.
    pub fn check_partial(&self, node: &NodeName) -> Result<(), SecureError> {
        self.expect(Stage::Decrypting, "partial decryption")?;
        if self.request.is_none() || !self.pollers.contains(node) {
            return Err(SecureError::NotAResponder(node.clone()));
        }
        if self.partials.contains_key(node) {
            return Err(SecureError::Duplicate { node: node.clone(), what: "partial decryption" });
        }
        Ok(())
    }

    /// Stores `node`'s partial decryption.
    ///
    /// # Errors
    /// As [`SecureRound::check_partial`]; [`SecureError::BadPartial`] for a wrong length.
    pub fn add_partial(&mut self, node: &NodeName, values: Vec<u64>) -> Result<(), SecureError> {
        self.check_partial(node)?;
        self.ctx
            .check_partial(self.announcement.model_len, &values)
            .map_err(|e| SecureError::BadPartial(e.to_string()))?;
        let responder = self.ids.get(node).copied().ok_or_else(|| SecureError::NotParticipant(node.clone()))?;
        let announcement = self.announcement.hash();
        self.partials.insert(
            node.clone(),
            PartialDecryption { round: self.announcement.round, announcement, responder, values },
        );
        Ok(())
    }

    /// Advances through the stages as messages and deadlines allow. `answered` are the selected
    /// nodes that uploaded or declined; `min_updates` the federation's `min_clients`.
    pub fn step(
        &mut self,
        now: Instant,
        answered: &BTreeSet<NodeName>,
        min_updates: usize,
        events: &mut Vec<SecureEvent>,
    ) -> Outcome {
        loop {
            let late = now >= self.deadline;
            match self.stage {
                Stage::Sharing => {
                    let all = self.ids.keys().all(|n| self.sharers.contains(n) || answered.contains(n));
                    if !(all || late) {
                        return Outcome::Pending;
                    }
                    let required = self.threshold().max(self.announcement.min_participants).max(min_updates);
                    if self.sharers.len() < required {
                        return self.fail(self.sharers.len(), required, "too few nodes distributed key shares".into());
                    }
                    self.holders = self.sharers.clone();
                    self.stage = Stage::Uploading;
                    self.deadline = now + self.phase_time;
                    events.push(SecureEvent::KeyHoldersFixed(self.holders.iter().cloned().collect()));
                }
                Stage::Uploading => {
                    let all = self.holders.iter().all(|n| self.uploaded.contains(n) || answered.contains(n));
                    if !(all || late) {
                        return Outcome::Pending;
                    }
                    let required = self.announcement.min_participants.max(min_updates);
                    if self.uploaded.len() < required {
                        return self.fail(self.uploaded.len(), required, "too few encrypted uploads".into());
                    }
                    let aggregate = match self.aggregator.take().map(Aggregator::finish) {
                        Some(Ok(a)) => a,
                        Some(Err(e)) => return self.fail(self.uploaded.len(), required, e.to_string()),
                        None => return self.fail(0, required, "no encrypted uploads".into()),
                    };
                    self.aggregate = Some(aggregate);
                    self.stage = Stage::Decrypting;
                    self.deadline = now + self.phase_time;
                    events.push(SecureEvent::ParticipantsAnnounced(self.uploaded.iter().cloned().collect()));
                }
                Stage::Decrypting => {
                    let t = self.threshold();
                    let complete = self.request.is_some() && self.partials.len() == self.pollers.len();
                    if complete {
                        return self.decode();
                    }
                    if late {
                        return self.fail(
                            self.partials.len(),
                            t,
                            "too few key holders answered the decryption request".into(),
                        );
                    }
                    return Outcome::Pending;
                }
            }
        }
    }

    /// Records that the responder set was fixed by a poll (for the caller's event stream).
    pub fn responders(&self) -> Vec<NodeName> {
        if self.request.is_some() { self.pollers.clone() } else { Vec::new() }
    }

    fn fail(&self, got: usize, required: usize, reason: String) -> Outcome {
        Outcome::Failed { stage: self.stage.name(), got, required, reason }
    }

    fn decode(&self) -> Outcome {
        let (Some(request), Some(aggregate)) = (&self.request, &self.aggregate) else {
            return self.fail(0, self.threshold(), "nothing to decrypt".into());
        };
        let partials: Vec<PartialDecryption> = self.partials.values().cloned().collect();
        let sums = match combine(&self.ctx, request, self.threshold(), aggregate, &partials) {
            Ok(s) => s,
            Err(e) => return self.fail(partials.len(), self.threshold(), format!("decryption failed: {e}")),
        };
        // Σ w_i x_i and Σ w_i in fixed point; rescale the weights w_i = n_i / n_ref back to examples.
        let scale = self.announcement.reference_examples / f64::from(self.ctx.params().fraction_bits).exp2();
        let Some((&weight, body)) = sums.split_last() else {
            return self.fail(0, 1, "empty decryption".into());
        };
        let sum: Vec<f64> = body.iter().map(|&m| m as f64 * scale).collect();
        let contributors = aggregate.participants().len();
        let sum = match WeightedSum::from_parts(sum, weight as f64 * scale, contributors) {
            Ok(s) => s,
            Err(e) => return self.fail(contributors, contributors, e.to_string()),
        };
        let names = |set: &BTreeSet<NodeName>| set.iter().cloned().collect::<Vec<_>>();
        let record = SecureRoundRecord {
            round_id: self.announcement.round.0,
            announcement_hash: hex::encode(self.announcement.hash().0),
            max_colluders: self.announcement.max_colluders,
            params: self.ctx.summary(),
            threshold: self.threshold(),
            min_participants: self.announcement.min_participants,
            selected: self.ids.len(),
            key_holders: names(&self.holders),
            participants: names(&self.uploaded),
            responders: self.pollers.clone(),
            reference_examples: self.announcement.reference_examples,
        };
        Outcome::Decoded { sum, record }
    }
}

/// SHA-256 of the model's little-endian f32 bytes, the digest every task header carries in hex.
pub fn model_digest(model: &[f32]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(cohort_core::model::parameters_to_bytes(model)).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::influence::Influence;
    use cohort_core::binding::BoundKeys;
    use cohort_core::config::InfluenceSection;
    use cohort_crypto::announce::{decode_sealed, encode_sealed};
    use cohort_crypto::envelope::open_share_for;
    use cohort_crypto::shamir::share_round_key;
    use cohort_crypto::{
        DecryptError, KeyHolder, MemoryJournal, NodeIdentity, RoundSecretKey, Weight, allocate_and_encrypt_update,
        seal_share, sign_consent,
    };

    /// A client driven in memory with the real crypto calls, as `cohort_client::secure` does.
    struct Client {
        name: NodeName,
        identity: NodeIdentity,
        key: Option<RoundSecretKey>,
        own: Option<cohort_crypto::KeyShare>,
        holder: Option<KeyHolder>,
    }

    /// Bindings as the service stores them after checking them; the round itself only reads the keys.
    fn bindings(clients: &[Client]) -> BTreeMap<NodeName, SignedBinding> {
        clients
            .iter()
            .map(|c| {
                let k = c.identity.public_keys();
                let keys = BoundKeys { x25519: k.x25519, share_ed25519: k.ed25519, ledger_ed25519: None };
                (
                    c.name.clone(),
                    SignedBinding { node: c.name.0.clone(), certificate_der: Vec::new(), keys, signature: Vec::new() },
                )
            })
            .collect()
    }

    /// `n` clients, `c` colluders assumed, `min` the smallest decryptable set, a 3-parameter model.
    fn setup(n: usize, c: usize, min: usize) -> (SecureRound, Vec<Client>, Instant) {
        let now = Instant::now();
        let settings = SecureSettings::new(&SecAggParams::default(), c, None, Some(min)).unwrap();
        let clients: Vec<Client> = (0..n)
            .map(|i| Client {
                name: NodeName(format!("c{i}")),
                identity: NodeIdentity::generate(),
                key: None,
                own: None,
                holder: None,
            })
            .collect();
        let names: Vec<NodeName> = clients.iter().map(|c| c.name.clone()).collect();
        let bindings = bindings(&clients);
        let examples = clients.iter().enumerate().map(|(i, c)| (c.name.clone(), 10.0 * (i + 1) as f64)).collect();
        let weights = Influence::new(InfluenceSection::default()).weights(&names, &examples);
        let start =
            RoundStart { federation: "f", selected: &names, bindings: &bindings, weights: &weights, model: &[0.0; 3] };
        let round = SecureRound::start(&settings, start, &mut rand::rng(), now, Duration::from_secs(10)).unwrap();
        (round, clients, now)
    }

    fn share(round: &mut SecureRound, c: &mut Client) {
        let ann = round.announcement().clone();
        let ctx = ann.params.build().unwrap();
        let me = ann.participant(&c.name.0).unwrap().id;
        let key = RoundSecretKey::generate(&ctx);
        let ids: Vec<ParticipantId> = ann.participants.iter().map(|p| p.id).collect();
        let mut envelopes = Vec::new();
        for (to, s) in share_round_key(&ctx, &key, ann.threshold, &ids, &mut rand::rng()).unwrap() {
            if to == me {
                c.own = Some(s);
                continue;
            }
            let p = ann.by_id(to).unwrap();
            let sealed = seal_share(&c.identity, &p.keys, &ann.share_context(me, to), &s).unwrap();
            envelopes.push((NodeName(p.name.clone()), encode_sealed(&sealed)));
        }
        c.key = Some(key);
        let consent = sign_consent(&c.identity, me, &ann.hash());
        round.submit_shares(&c.name, envelopes, &consent.signature).unwrap();
    }

    fn open(round: &SecureRound, c: &mut Client) {
        let ann = round.announcement().clone();
        let ctx = ann.params.build().unwrap();
        let me = ann.participant(&c.name.0).unwrap().id;
        let delivery = round.shares_for(&c.name).unwrap().unwrap();
        let mut holder = KeyHolder::new(&ctx, &ann, me).unwrap();
        holder.receive_share(me, c.own.take().unwrap()).unwrap();
        for (from, blob) in delivery.envelopes {
            let p = ann.participant(&from.0).unwrap();
            let sc = ann.share_context(p.id, me);
            let s =
                open_share_for(&ctx, &c.identity, &p.keys, &sc, &decode_sealed(sc.clone(), &blob).unwrap()).unwrap();
            holder.receive_share(p.id, s).unwrap();
        }
        c.holder = Some(holder);
    }

    fn upload(round: &mut SecureRound, c: &mut Client, delta: &[f32], examples: u64) {
        let ann = round.announcement().clone();
        let ctx = ann.params.build().unwrap();
        let w = Weight::new(&ctx, ann.weight_for(examples)).unwrap();
        let body = allocate_and_encrypt_update(
            &ctx,
            ann.round,
            &ann.seed,
            c.key.as_ref().unwrap(),
            delta,
            w,
            &mut rand::rng(),
        )
        .unwrap();
        round.add_upload(&c.name, &body).unwrap();
    }

    fn answered(names: &[NodeName]) -> BTreeSet<NodeName> {
        names.iter().cloned().collect()
    }

    /// Five clients, t = 3: sharing, upload by four (one never uploads), one holder vanishes, the
    /// first three pollers decrypt, and the decoded weighted mean equals the plaintext one.
    #[test]
    fn a_secure_round_decodes_the_weighted_mean_despite_dropouts() {
        let (mut round, mut clients, now) = setup(5, 0, 3);
        assert_eq!(round.announcement().threshold, 3);
        let mut events = Vec::new();
        for c in clients.iter_mut() {
            share(&mut round, c);
        }
        assert!(matches!(round.step(now, &BTreeSet::new(), 1, &mut events), Outcome::Pending));
        assert_eq!(events.len(), 1);
        for c in clients.iter_mut() {
            open(&round, c);
        }
        let deltas = [[0.5f32, -1.0, 2.0], [1.5, 0.25, -2.0], [0.0, 3.0, 1.0], [-0.75, 0.5, 0.5]];
        let examples = [10u64, 20, 30, 40];
        for i in 0..4 {
            upload(&mut round, &mut clients[i], &deltas[i], examples[i]);
        }
        // Client 4 never uploads; at the upload deadline the set S is the four uploaders.
        let up: Vec<NodeName> = clients[..4].iter().map(|c| c.name.clone()).collect();
        assert!(matches!(round.step(now, &answered(&up), 1, &mut events), Outcome::Pending));
        let later = now + Duration::from_secs(11);
        assert!(matches!(round.step(later, &answered(&up), 1, &mut events), Outcome::Pending));
        assert_eq!(events.last(), Some(&SecureEvent::ParticipantsAnnounced(up.clone())));
        // Holder 0 vanished after its upload: holders 1, 4, 2 poll first and become the responders.
        assert_eq!(round.poll(&clients[1].name), (Poll::Wait, false));
        assert_eq!(round.poll(&clients[4].name), (Poll::Wait, false));
        let (Poll::Decrypt(request), true) = round.poll(&clients[2].name) else { panic!("request expected") };
        assert_eq!(round.poll(&clients[3].name), (Poll::Wait, false));
        for i in [1, 4, 2] {
            let partial =
                clients[i].holder.as_mut().unwrap().partial_decrypt(&request, &mut MemoryJournal::default()).unwrap();
            round.add_partial(&clients[i].name, partial.values).unwrap();
        }
        let Outcome::Decoded { sum, record } = round.step(later, &answered(&up), 1, &mut events) else {
            panic!("decoded expected")
        };
        assert_eq!(record.responders.len(), 3);
        assert_eq!(record.participants.len(), 4);
        assert_eq!(record.key_holders.len(), 5);
        let mean = sum.mean().unwrap();
        let total: f64 = examples.iter().map(|&n| n as f64).sum();
        for c in 0..3 {
            let exact: f64 = (0..4).map(|i| f64::from(deltas[i][c]) * examples[i] as f64).sum::<f64>() / total;
            assert!((mean[c] - exact).abs() <= round.ctx.quantization_step(), "coord {c}: {} vs {exact}", mean[c]);
        }
        assert!((sum.weight() - total).abs() < 1e-3 * total, "weight {}", sum.weight());
    }

    /// Protocol-level refusals: shares outside the sharing stage, uploads by non-holders, a
    /// partial from a non-responder, a second partial, a too-small participant set, and a key
    /// holder's second answer.
    #[test]
    fn refusals_at_the_protocol_level() {
        let (mut round, mut clients, now) = setup(5, 0, 3);
        let mut events = Vec::new();
        for c in clients[..4].iter_mut() {
            share(&mut round, c);
        }
        // A malformed submission: too few envelopes.
        let ann = round.announcement().clone();
        let consent4 = sign_consent(&clients[4].identity, ann.participant("c4").unwrap().id, &ann.hash());
        assert!(matches!(
            round.submit_shares(&clients[4].name, vec![], &consent4.signature),
            Err(SecureError::BadShares(_))
        ));
        // A consent signed by another node, or over another announcement, is refused before anything is stored.
        let forged = sign_consent(&clients[0].identity, ann.participant("c4").unwrap().id, &ann.hash());
        assert_eq!(
            round.submit_shares(&clients[4].name, vec![], &forged.signature),
            Err(SecureError::BadConsent(clients[4].name.clone()))
        );
        assert_eq!(
            round.submit_shares(&clients[4].name, vec![], &[0; 10]),
            Err(SecureError::BadConsent(clients[4].name.clone()))
        );
        let later = now + Duration::from_secs(11);
        assert!(matches!(round.step(later, &BTreeSet::new(), 1, &mut events), Outcome::Pending));
        // Client 4 missed the sharing deadline: it is not a key holder and may not upload.
        assert_eq!(round.shares_for(&clients[4].name), Err(SecureError::NotAKeyHolder(clients[4].name.clone())));
        assert!(matches!(
            round.submit_shares(&clients[4].name, vec![], &consent4.signature),
            Err(SecureError::WrongStage { .. })
        ));
        assert_eq!(round.check_upload(&clients[4].name), Err(SecureError::NotAKeyHolder(clients[4].name.clone())));
        for c in clients[..4].iter_mut() {
            open(&round, c);
        }
        // Only two uploads: below min_participants = 3, the round fails rather than decrypting a set of two.
        upload(&mut round, &mut clients[0], &[1.0, 1.0, 1.0], 10);
        upload(&mut round, &mut clients[1], &[2.0, 2.0, 2.0], 10);
        assert!(matches!(round.add_upload(&clients[1].name, &[0; 4]), Err(SecureError::Duplicate { .. })));
        let answered2 = answered(&[clients[0].name.clone(), clients[1].name.clone()]);
        let much_later = later + Duration::from_secs(11);
        assert!(matches!(
            round.step(much_later, &answered2, 1, &mut events),
            Outcome::Failed { got: 2, required: 3, .. }
        ));
        // A key holder refuses a request for a set below min_participants, and answers at most once.
        let ann = round.announcement().clone();
        let ids: Vec<ParticipantId> = ann.participants.iter().map(|p| p.id).collect();
        let consents: Vec<Consent> =
            clients.iter().zip(&ids).map(|(c, &id)| sign_consent(&c.identity, id, &ann.hash())).collect();
        let holder = clients[0].holder.as_mut().unwrap();
        let mut journal = MemoryJournal::default();
        let small = DecryptionRequest {
            round: ann.round,
            announcement: ann.hash(),
            participants: ids[..2].to_vec(),
            consents: consents[..2].to_vec(),
            responders: ids[..3].to_vec(),
            len: 4,
        };
        assert_eq!(
            holder.partial_decrypt(&small, &mut journal),
            Err(DecryptError::TooFewParticipants { got: 2, min: 3 })
        );
        let full =
            DecryptionRequest { participants: ids[..4].to_vec(), consents: consents[..4].to_vec(), ..small.clone() };
        holder.partial_decrypt(&full, &mut journal).unwrap();
        assert_eq!(holder.partial_decrypt(&full, &mut journal), Err(DecryptError::AlreadyAnswered));
    }

    #[test]
    fn responders_are_checked() {
        let (mut round, mut clients, now) = setup(3, 0, 2);
        let mut events = Vec::new();
        for c in clients.iter_mut() {
            share(&mut round, c);
        }
        round.step(now, &BTreeSet::new(), 1, &mut events);
        for c in clients.iter_mut() {
            open(&round, c);
        }
        for (i, c) in clients.iter_mut().enumerate() {
            upload(&mut round, c, &[i as f32, 0.0, 1.0], 5);
        }
        let all: Vec<NodeName> = clients.iter().map(|c| c.name.clone()).collect();
        round.step(now, &answered(&all), 1, &mut events);
        assert!(matches!(round.add_partial(&clients[0].name, vec![0; 4]), Err(SecureError::NotAResponder(_))));
        round.poll(&clients[0].name);
        let (Poll::Decrypt(request), true) = round.poll(&clients[2].name) else { panic!() };
        assert_eq!(round.poll(&clients[1].name), (Poll::Wait, false));
        assert!(matches!(round.add_partial(&clients[1].name, vec![0; 4]), Err(SecureError::NotAResponder(_))));
        assert!(matches!(round.add_partial(&clients[0].name, vec![0; 3]), Err(SecureError::BadPartial(_))));
        let p = clients[0].holder.as_mut().unwrap().partial_decrypt(&request, &mut MemoryJournal::default()).unwrap();
        round.add_partial(&clients[0].name, p.values.clone()).unwrap();
        assert!(matches!(round.add_partial(&clients[0].name, p.values), Err(SecureError::Duplicate { .. })));
        // A responder that never answers: the round fails at the decryption deadline.
        let late = now + Duration::from_secs(11);
        assert!(matches!(
            round.step(late, &answered(&all), 1, &mut events),
            Outcome::Failed { got: 1, required: 2, .. }
        ));
    }
}

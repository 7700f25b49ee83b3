//! The gRPC service: authenticates each call by its client certificate, checks every message, and feeds the
//! round state machine. No round logic lives here.

use crate::recorder::{Recorded, Recorder};
use crate::round::{Event, RoundError, RoundMachine, Task};
use crate::secure::SecureError;
use cohort_core::binding::{BoundKeys, FederationTrust, SignedBinding, UnixTime};
use cohort_core::config::FederationPlan;
use cohort_core::metrics::EvalMetrics;
use cohort_core::model::{parameters_from_bytes, parameters_sha256, parameters_to_bytes};
use cohort_core::pki::Role;
use cohort_core::tls::peer_identity;
use cohort_core::wire::{self, BodyAssembler, proto};
use cohort_core::{ModelVersion, NodeName, Round};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// How long a task poll waits for something to do before answering `WAIT`.
const LONG_POLL: Duration = Duration::from_secs(10);

/// What the coordinator knows of a joined node besides its name.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    /// Ed25519 public key (hex) of the node's ledger and share-signing key.
    pub signing_public_key: String,
    /// X25519 public key (hex) for share envelopes.
    pub encryption_public_key: String,
    /// SHA-256 of the node's schema and row count.
    pub data_fingerprint: String,
    /// The (noisy) example count the node reported.
    pub reported_examples: f64,
    /// The (noisy) training examples per class the node reported (empty if none).
    #[serde(default)]
    pub label_histogram: Vec<i64>,
}

/// State shared by the service, the deadline ticker and the run loop.
pub struct Shared {
    machine: Mutex<RoundMachine>,
    plan: FederationPlan,
    nodes: Mutex<BTreeMap<NodeName, NodeInfo>>,
    changed: watch::Sender<u64>,
    events: broadcast::Sender<Event>,
    recorder: Mutex<Option<Recorder>>,
    recorded: Mutex<Vec<Recorded>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("federation_id", &self.plan.federation_id).finish_non_exhaustive()
    }
}

impl Shared {
    /// Wraps a machine and its plan.
    pub fn new(machine: RoundMachine, plan: FederationPlan) -> Arc<Self> {
        let (changed, _) = watch::channel(0);
        let (events, _) = broadcast::channel(1024);
        Arc::new(Self {
            machine: Mutex::new(machine),
            plan,
            nodes: Mutex::new(BTreeMap::new()),
            changed,
            events,
            recorder: Mutex::new(None),
            recorded: Mutex::new(Vec::new()),
        })
    }

    /// Records every completed round in the registry from now on.
    pub fn set_recorder(&self, recorder: Recorder) {
        *lock(&self.recorder) = Some(recorder);
    }

    /// The versions registered so far, with their gate decisions.
    pub fn recorded(&self) -> Vec<Recorded> {
        lock(&self.recorded).clone()
    }

    /// Subscribes to round events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// A receiver that changes whenever the machine produces events.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The federation plan.
    pub fn plan(&self) -> &FederationPlan {
        &self.plan
    }

    /// Information on joined nodes.
    pub fn nodes(&self) -> BTreeMap<NodeName, NodeInfo> {
        lock(&self.nodes).clone()
    }

    /// Runs `f` on the machine, then publishes the events it produced.
    pub fn with_machine<T>(&self, f: impl FnOnce(&mut RoundMachine) -> T) -> T {
        let (out, events) = {
            let mut machine = lock(&self.machine);
            let out = f(&mut machine);
            let events = machine.drain_events();
            // Registered under the machine lock, so the model is exactly the version the round produced.
            for event in &events {
                if let Event::Evaluated(summary) = event {
                    self.record(summary, &machine);
                }
            }
            (out, events)
        };
        if !events.is_empty() {
            for event in events {
                // A send error only means nobody is listening.
                let _ = self.events.send(event);
            }
            self.changed.send_modify(|v| *v += 1);
        }
        out
    }

    fn record(&self, summary: &crate::round::RoundSummary, machine: &RoundMachine) {
        let mut recorder = lock(&self.recorder);
        let Some(recorder) = recorder.as_mut() else { return };
        let nodes = self.nodes();
        let privacy = recorder.privacy_spend(nodes.keys().cloned());
        match recorder.record(summary, machine.global(), machine.strategy(), &nodes, &privacy) {
            Ok(recorded) => {
                tracing::info!(
                    version = %recorded.record.version,
                    stage = %recorded.record.stage,
                    "registered round {}: {}",
                    summary.round,
                    recorded.decision.summary()
                );
                lock(&self.recorded).push(recorded);
            }
            Err(err) => tracing::error!(round = summary.round.0, "cannot record the round in the registry: {err}"),
        }
    }

    /// Keeps a node's verified key binding for auditors (see [`Recorder::store_binding`]).
    fn store_binding(&self, binding: &SignedBinding) {
        if let Some(recorder) = lock(&self.recorder).as_ref()
            && let Err(e) = recorder.store_binding(&self.plan.federation_id, binding)
        {
            tracing::warn!(node = %binding.node, "cannot keep the key binding for auditors: {e}");
        }
    }

    /// Stores ledger records a node sent in the coordinator's durable copy.
    fn store_ledger(&self, node: &NodeName, lines: &str) -> Result<(), Status> {
        let signer = lock(&self.nodes).get(node).map(|i| i.signing_public_key.clone()).unwrap_or_default();
        let recorder = lock(&self.recorder);
        if let Some(recorder) = recorder.as_ref() {
            recorder.store_ledger_lines(node, &signer, lines).map_err(|e| {
                tracing::warn!(node = %node, "refused ledger records: {e}");
                Status::invalid_argument(format!("ledger records refused: {e}"))
            })?;
        }
        Ok(())
    }

    /// Advances deadlines; call periodically.
    pub fn tick(&self) {
        self.with_machine(|m| m.advance(Instant::now()));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Maps a refused message to a gRPC status carrying the typed error's text.
pub fn status_of(err: &RoundError) -> Status {
    let msg = err.to_string();
    match err {
        RoundError::NotInRoster(_) => Status::permission_denied(msg),
        RoundError::NotJoined(_) => Status::unauthenticated(msg),
        RoundError::BadUpdate(_) | RoundError::BadReport(_) => Status::invalid_argument(msg),
        RoundError::Secure(
            SecureError::BadShares(_)
            | SecureError::BadBody(_)
            | SecureError::BadPartial(_)
            | SecureError::PlaintextRefused,
        ) => Status::invalid_argument(msg),
        RoundError::Secure(SecureError::MissingKeys(_) | SecureError::BadConsent(_)) => Status::invalid_argument(msg),
        RoundError::Secure(SecureError::Duplicate { .. }) => Status::already_exists(msg),
        RoundError::Duplicate(_) => Status::already_exists(msg),
        _ => Status::failed_precondition(msg),
    }
}

/// The tonic service.
#[derive(Debug, Clone)]
pub struct FederationService {
    shared: Arc<Shared>,
    trust: Arc<FederationTrust>,
}

impl FederationService {
    /// A service over shared state; `trust` (the federation CA) checks the key bindings nodes send at join.
    pub fn new(shared: Arc<Shared>, trust: FederationTrust) -> Self {
        Self { shared, trust: Arc::new(trust) }
    }

    /// The binding of the caller's keys to its TLS certificate, if the join request carries well-formed keys
    /// and a signature that verifies against the certificate the caller presented.
    ///
    /// # Errors
    /// [`Status::invalid_argument`] for a signature that does not verify (the keys are then not the node's).
    fn binding_of(
        &self,
        node: &NodeName,
        request: &Request<proto::JoinRequest>,
    ) -> Result<Option<SignedBinding>, Status> {
        let req = request.get_ref();
        let key = |bytes: &[u8]| <[u8; 32]>::try_from(bytes).ok();
        let (Some(x25519), Some(share_ed25519)) = (key(&req.encryption_public_key), key(&req.share_signing_public_key))
        else {
            return Ok(None);
        };
        let ledger_ed25519 = key(&req.signing_public_key);
        if req.key_binding_signature.is_empty() {
            return Ok(None);
        }
        let Some(certificate_der) = request.peer_certs().and_then(|c| c.first().map(|c| c.to_vec())) else {
            return Ok(None);
        };
        let binding = SignedBinding {
            node: node.0.clone(),
            certificate_der,
            keys: BoundKeys { x25519, share_ed25519, ledger_ed25519 },
            signature: req.key_binding_signature.clone(),
        };
        self.trust
            .verify_binding(&binding, &self.shared.plan.federation_id, &node.0, Role::Client, UnixTime::now())
            .map_err(|e| {
                tracing::warn!(node = %node, "refused join: {e}");
                Status::invalid_argument(e.to_string())
            })?;
        self.shared.store_binding(&binding);
        Ok(Some(binding))
    }

    /// The caller's name, from its verified certificate, checked against the roster.
    fn identify<T>(&self, request: &Request<T>) -> Result<NodeName, Status> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::permission_denied("no client certificate: connect with mutual TLS"))?;
        let (name, _role) = peer_identity(&certs).map_err(|e| Status::permission_denied(e.to_string()))?;
        Ok(name)
    }

    fn check_ref(&self, round: Option<&proto::RoundRef>) -> Result<(Round, ModelVersion), Status> {
        let r = round.ok_or_else(|| Status::invalid_argument("message has no round reference"))?;
        self.shared.with_machine(|m| m.check_federation(&r.federation_id)).map_err(|e| status_of(&e))?;
        Ok((Round(r.round), ModelVersion(r.model_version)))
    }

    fn refuse(&self, node: &NodeName, what: &str, err: RoundError) -> Status {
        tracing::warn!(node = %node, "refused {what}: {err}");
        status_of(&err)
    }
}

type TaskStream = Pin<Box<dyn Stream<Item = Result<proto::TaskChunk, Status>> + Send>>;

/// Upload encoding of secure aggregation: one little-endian `u64` RLWE body per coordinate.
pub const RLWE_BODIES: &str = "rlwe-bodies";

/// Little-endian `u64`s from bytes whose length the caller checked to be a multiple of 8.
fn u64s_from_le(bytes: &[u8]) -> Vec<u64> {
    bytes.chunks_exact(8).map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect()
}

impl FederationService {
    /// Receives a secure upload: the complete body of one client is buffered (O(model), transient)
    /// and validated before it is added to the round's sum, so a broken or half upload never
    /// poisons the aggregate.
    async fn upload_bodies(
        &self,
        node: NodeName,
        round: Round,
        version: ModelVersion,
        header: &proto::UpdateHeader,
        mut stream: Streaming<proto::UpdateChunk>,
    ) -> Result<Response<proto::Ack>, Status> {
        let expected = self
            .shared
            .with_machine(|m| m.check_secure_update(&node, round, version))
            .map_err(|e| self.refuse(&node, "encrypted update", e))?;
        if header.parameter_count != expected as u64 {
            let err = RoundError::Secure(SecureError::BadBody(format!(
                "header declares {} coefficients, expected {expected}",
                header.parameter_count
            )));
            return Err(self.refuse(&node, "encrypted update", err));
        }
        let mut body = BodyAssembler::new(expected * 8);
        while let Some(chunk) = stream.next().await {
            match chunk?.body {
                Some(proto::update_chunk::Body::BodyChunk(bytes)) => {
                    body.push(&bytes).map_err(|e| Status::invalid_argument(e.to_string()))?
                }
                _ => return Err(Status::invalid_argument("a second header inside an update stream")),
            }
        }
        let bodies = u64s_from_le(&body.finish().map_err(|e| Status::invalid_argument(e.to_string()))?);
        self.shared
            .with_machine(|m| m.submit_secure_update(&node, round, version, &bodies, Instant::now()))
            .map_err(|e| self.refuse(&node, "encrypted update", e))?;
        tracing::info!(node = %node, round = round.0, "encrypted update added to the sum");
        Ok(Response::new(proto::Ack { accepted: true, message: String::new() }))
    }
}

#[tonic::async_trait]
impl proto::federation_server::Federation for FederationService {
    async fn join(&self, request: Request<proto::JoinRequest>) -> Result<Response<proto::JoinResponse>, Status> {
        let node = self.identify(&request)?;
        self.shared
            .with_machine(|m| m.check_federation(&request.get_ref().federation_id))
            .map_err(|e| status_of(&e))?;
        let binding = self.binding_of(&node, &request)?;
        let req = request.into_inner();
        // Keys first: a round this join starts must already know them.
        self.shared
            .with_machine(|m| m.announce(&node, binding, req.reported_examples))
            .map_err(|e| self.refuse(&node, "join", e))?;
        // A node first joins to learn the plan (no data fingerprint yet), then again with its data fingerprint
        // and example count. Secure rounds fix their public FedAvg reference count from those counts at
        // start, so in a secure federation only the second join counts towards starting a round.
        let discovery_only = req.data_fingerprint.is_empty() && self.shared.with_machine(|m| m.is_secure());
        if !discovery_only {
            self.shared.with_machine(|m| m.join(&node, Instant::now())).map_err(|e| self.refuse(&node, "join", e))?;
        }
        lock(&self.shared.nodes).insert(
            node.clone(),
            NodeInfo {
                signing_public_key: hex::encode(&req.signing_public_key),
                encryption_public_key: hex::encode(&req.encryption_public_key),
                data_fingerprint: req.data_fingerprint.clone(),
                reported_examples: req.reported_examples,
                label_histogram: req.label_histogram.clone(),
            },
        );
        tracing::info!(node = %node, examples = req.reported_examples, labels = ?req.label_histogram, "node joined");
        let plan_json = serde_json::to_string(&self.shared.plan).map_err(|e| Status::internal(e.to_string()))?;
        let current_round = self.shared.with_machine(|m| m.completed().0);
        Ok(Response::new(proto::JoinResponse {
            federation_id: self.shared.plan.federation_id.clone(),
            plan_json,
            current_round,
        }))
    }

    type FetchTaskStream = TaskStream;

    async fn fetch_task(&self, request: Request<proto::TaskRequest>) -> Result<Response<TaskStream>, Status> {
        let node = self.identify(&request)?;
        let req = request.into_inner();
        if let Some(r) = &req.last_seen {
            self.shared.with_machine(|m| m.check_federation(&r.federation_id)).map_err(|e| status_of(&e))?;
        }
        let mut watch = self.shared.watch();
        let give_up = tokio::time::Instant::now() + LONG_POLL;
        let task = loop {
            let task = self
                .shared
                .with_machine(|m| m.task_for(&node, Instant::now()))
                .map_err(|e| self.refuse(&node, "task request", e))?;
            if task != Task::Wait {
                break task;
            }
            let wait = tokio::time::timeout_at(give_up, watch.changed());
            match wait.await {
                Ok(Ok(())) => continue,
                _ => break Task::Wait,
            }
        };
        let fed = self.shared.plan.federation_id.clone();
        let mut decrypt_json = None;
        let (kind, round, version) = match task {
            Task::Wait => (proto::TaskKind::Wait, Round(0), ModelVersion(0)),
            Task::Decrypt { round, version, request } => {
                decrypt_json = Some(serde_json::to_string(&request).map_err(|e| Status::internal(e.to_string()))?);
                (proto::TaskKind::Decrypt, round, version)
            }
            Task::Train { round, version } => (proto::TaskKind::Train, round, version),
            Task::Evaluate { round, version } => (proto::TaskKind::Evaluate, round, version),
            Task::Finished { version } => {
                (proto::TaskKind::Finished, self.shared.with_machine(|m| m.completed()), version)
            }
        };
        let model = if matches!(kind, proto::TaskKind::Wait | proto::TaskKind::Decrypt) {
            Vec::new()
        } else {
            self.shared.with_machine(|m| m.global().to_vec())
        };
        // Secure rounds: the training task carries the round's public data (seed, participants, keys, policy)
        // and every participant's certificate with its key-binding signature.
        let (secure, bindings) = if kind == proto::TaskKind::Train {
            self.shared
                .with_machine(|m| m.secure_announcement().map(|(a, b)| (a.clone(), b.to_vec())))
                .map_or((None, Vec::new()), |(a, b)| (Some(a), b))
        } else {
            (None, Vec::new())
        };
        let settings_json = match decrypt_json {
            Some(json) => json,
            None => serde_json::json!({
                "local_epochs": self.shared.plan.training.local_epochs,
                "learning_rate": self.shared.plan.training.learning_rate,
                "batch_size": self.shared.plan.training.batch_size,
                "proximal_mu": self.shared.plan.proximal_mu(),
                "secure": secure,
                "secure_bindings": bindings,
            })
            .to_string(),
        };
        let header = proto::TaskHeader {
            round: Some(wire::round_ref(&fed, round, version)),
            kind: kind as i32,
            retry_after_ms: 200,
            parameter_count: model.len() as u64,
            settings_json,
            model_sha256: if model.is_empty() { String::new() } else { parameters_sha256(&model) },
        };
        let bytes = parameters_to_bytes(&model);
        let mut messages = vec![Ok(proto::TaskChunk { body: Some(proto::task_chunk::Body::Header(header)) })];
        messages.extend(
            wire::chunks(&bytes).map(|c| Ok(proto::TaskChunk { body: Some(proto::task_chunk::Body::ModelChunk(c)) })),
        );
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }

    async fn upload_update(
        &self,
        request: Request<Streaming<proto::UpdateChunk>>,
    ) -> Result<Response<proto::Ack>, Status> {
        let node = self.identify(&request)?;
        let mut stream = request.into_inner();
        let header = match stream.next().await {
            Some(Ok(proto::UpdateChunk { body: Some(proto::update_chunk::Body::Header(h)) })) => h,
            Some(Err(status)) => return Err(status),
            _ => return Err(Status::invalid_argument("an update must start with its header")),
        };
        let (round, version) = self.check_ref(header.round.as_ref())?;
        if header.encoding == RLWE_BODIES {
            return self.upload_bodies(node, round, version, &header, stream).await;
        }
        if header.encoding != "f32-delta" {
            return Err(Status::invalid_argument(format!("unsupported update encoding {:?}", header.encoding)));
        }
        let expected = self.shared.with_machine(|m| m.global().len());
        if header.parameter_count != expected as u64 {
            let err = RoundError::BadUpdate(crate::strategy::AggregateError::WrongShape {
                expected,
                actual: usize::try_from(header.parameter_count).unwrap_or(usize::MAX),
            });
            return Err(self.refuse(&node, "update", err));
        }
        // Refuse stale, duplicate or unselected uploads before reading the body.
        self.shared
            .with_machine(|m| m.check_update(&node, round, version))
            .map_err(|e| self.refuse(&node, "update", e))?;
        let mut body = BodyAssembler::new(expected * 4);
        while let Some(chunk) = stream.next().await {
            match chunk?.body {
                Some(proto::update_chunk::Body::BodyChunk(bytes)) => {
                    body.push(&bytes).map_err(|e| Status::invalid_argument(e.to_string()))?
                }
                _ => return Err(Status::invalid_argument("a second header inside an update stream")),
            }
        }
        let bytes = body.finish().map_err(|e| Status::invalid_argument(e.to_string()))?;
        let delta = parameters_from_bytes(&bytes).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.shared
            .with_machine(|m| m.submit_update(&node, round, version, &delta, header.train_loss, Instant::now()))
            .map_err(|e| self.refuse(&node, "update", e))?;
        tracing::info!(node = %node, round = round.0, "update accepted");
        Ok(Response::new(proto::Ack { accepted: true, message: String::new() }))
    }

    async fn decline(&self, request: Request<proto::DeclineRequest>) -> Result<Response<proto::Ack>, Status> {
        let node = self.identify(&request)?;
        let req = request.into_inner();
        let (round, version) = self.check_ref(req.round.as_ref())?;
        self.shared
            .with_machine(|m| m.decline(&node, round, version, &req.reason, Instant::now()))
            .map_err(|e| self.refuse(&node, "decline", e))?;
        if !req.ledger_record_json.is_empty() {
            self.shared.store_ledger(&node, &req.ledger_record_json)?;
        }
        tracing::info!(node = %node, round = round.0, "node declined: {}", req.reason);
        Ok(Response::new(proto::Ack { accepted: true, message: String::new() }))
    }

    async fn report_evaluation(
        &self,
        request: Request<proto::EvaluationReport>,
    ) -> Result<Response<proto::Ack>, Status> {
        let node = self.identify(&request)?;
        let req = request.into_inner();
        let (round, version) = self.check_ref(req.round.as_ref())?;
        // Ledger records first, so the version this report may complete carries this node's privacy spend.
        if !req.ledger_jsonl.is_empty() {
            self.shared.store_ledger(&node, &req.ledger_jsonl)?;
        }
        let metrics: EvalMetrics = serde_json::from_str(&req.metrics_json)
            .map_err(|e| self.refuse(&node, "evaluation", RoundError::BadReport(e.to_string())))?;
        metrics
            .validate_values()
            .map_err(|e| self.refuse(&node, "evaluation", RoundError::BadReport(e.to_string())))?;
        self.shared
            .with_machine(|m| m.report_evaluation(&node, round, version, metrics, Instant::now()))
            .map_err(|e| self.refuse(&node, "evaluation", e))?;
        Ok(Response::new(proto::Ack { accepted: true, message: String::new() }))
    }

    async fn submit_shares(&self, request: Request<proto::ShareSubmission>) -> Result<Response<proto::Ack>, Status> {
        let node = self.identify(&request)?;
        let req = request.into_inner();
        let (round, version) = self.check_ref(req.round.as_ref())?;
        let envelopes: Vec<(NodeName, Vec<u8>)> =
            req.envelopes.into_iter().map(|e| (NodeName(e.recipient), e.sealed)).collect();
        let count = envelopes.len();
        self.shared
            .with_machine(|m| m.submit_shares(&node, round, version, envelopes, &req.consent_signature, Instant::now()))
            .map_err(|e| self.refuse(&node, "key shares", e))?;
        tracing::info!(node = %node, round = round.0, envelopes = count, "sealed key shares received");
        Ok(Response::new(proto::Ack { accepted: true, message: String::new() }))
    }

    async fn fetch_shares(
        &self,
        request: Request<proto::ShareRequest>,
    ) -> Result<Response<proto::ShareBundle>, Status> {
        let node = self.identify(&request)?;
        let req = request.into_inner();
        let (round, version) = self.check_ref(req.round.as_ref())?;
        let mut watch = self.shared.watch();
        let give_up = tokio::time::Instant::now() + LONG_POLL;
        let delivery = loop {
            let delivery = self
                .shared
                .with_machine(|m| m.shares_for(&node, round, version, Instant::now()))
                .map_err(|e| self.refuse(&node, "share request", e))?;
            if delivery.is_some() {
                break delivery;
            }
            match tokio::time::timeout_at(give_up, watch.changed()).await {
                Ok(Ok(())) => continue,
                _ => break None,
            }
        };
        let rref = Some(wire::round_ref(&self.shared.plan.federation_id, round, version));
        let Some(delivery) = delivery else {
            return Ok(Response::new(proto::ShareBundle {
                round: rref,
                envelopes: Vec::new(),
                participants_json: String::new(),
                ready: false,
            }));
        };
        let holders: Vec<&str> = delivery.key_holders.iter().map(|n| n.0.as_str()).collect();
        let participants_json = serde_json::to_string(&holders).map_err(|e| Status::internal(e.to_string()))?;
        let envelopes = delivery
            .envelopes
            .into_iter()
            .map(|(sender, sealed)| proto::SenderEnvelope { sender: sender.0, sealed })
            .collect();
        Ok(Response::new(proto::ShareBundle { round: rref, envelopes, participants_json, ready: true }))
    }

    async fn submit_partial_decryption(
        &self,
        request: Request<Streaming<proto::PartialChunk>>,
    ) -> Result<Response<proto::Ack>, Status> {
        let node = self.identify(&request)?;
        let mut stream = request.into_inner();
        let header = match stream.next().await {
            Some(Ok(proto::PartialChunk { body: Some(proto::partial_chunk::Body::Header(h)) })) => h,
            Some(Err(status)) => return Err(status),
            _ => return Err(Status::invalid_argument("a partial decryption must start with its header")),
        };
        let (round, version) = self.check_ref(header.round.as_ref())?;
        let expected = self
            .shared
            .with_machine(|m| m.check_partial(&node, round, version))
            .map_err(|e| self.refuse(&node, "partial decryption", e))?;
        if header.coefficient_count != expected as u64 {
            let err = RoundError::Secure(SecureError::BadPartial(format!(
                "header declares {} values, expected {expected}",
                header.coefficient_count
            )));
            return Err(self.refuse(&node, "partial decryption", err));
        }
        let mut body = BodyAssembler::new(expected * 8);
        while let Some(chunk) = stream.next().await {
            match chunk?.body {
                Some(proto::partial_chunk::Body::BodyChunk(bytes)) => {
                    body.push(&bytes).map_err(|e| Status::invalid_argument(e.to_string()))?
                }
                _ => return Err(Status::invalid_argument("a second header inside a partial decryption stream")),
            }
        }
        let values = u64s_from_le(&body.finish().map_err(|e| Status::invalid_argument(e.to_string()))?);
        self.shared
            .with_machine(|m| m.submit_partial(&node, round, version, values, Instant::now()))
            .map_err(|e| self.refuse(&node, "partial decryption", e))?;
        tracing::info!(node = %node, round = round.0, "partial decryption received");
        Ok(Response::new(proto::Ack { accepted: true, message: String::new() }))
    }
}

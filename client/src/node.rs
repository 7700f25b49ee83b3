//! The client node's loop: connect over mutual TLS, join, then poll for tasks, train or evaluate, and upload.
//!
//! Protocol logic only: the local work (training, evaluation, privacy budget) is behind [`LocalWork`], so the
//! loop is the same for every model and privacy setting.

use crate::data::{self, LocalData};
use crate::journal::SqliteJournal;
use crate::secure::{self as secagg, ClientRound, Verifier};
use cohort_core::binding::{BoundKeys, CertSigner, FederationTrust, SignedBinding, UnixTime};
use cohort_core::config::{ClientConfig, FederationPlan, SecureAggregationMode};
use cohort_core::metrics::EvalMetrics;
use cohort_core::model::{parameters_from_bytes, parameters_sha256, parameters_to_bytes};
use cohort_core::pki::Role;
use cohort_core::secret::NodeSecret;
use cohort_core::tls::{Preflight, client_tls, diagnose_client_failure, error_chain_text, preflight};
use cohort_core::wire::{self, BodyAssembler, MAX_MESSAGE_BYTES, proto};
use cohort_core::{ModelVersion, Round};
use cohort_crypto::{DecryptionRequest, NodeIdentity, RoundAnnouncement};
use proto::federation_client::FederationClient;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

/// A client node that stopped with an error. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TLS handshake was refused (by either side).
    #[error("{0}")]
    TlsRefused(String),
    /// The coordinator refused this node (for example: not in the roster).
    #[error("the coordinator refused this node: {0}")]
    Refused(String),
    /// The coordinator does not know this node as joined (it restarted since the node joined); the node joins
    /// again.
    #[error("the coordinator no longer knows this node as joined: {0}")]
    NotJoined(String),
    /// The coordinator cannot be reached.
    #[error("cannot reach the coordinator at {url}: {message}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The coordinator sent something this node cannot use.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Local data does not fit the federation schema.
    #[error(transparent)]
    Data(#[from] data::DataError),
    /// Local setup problem (TLS files, keys, ledger).
    #[error("{0}")]
    Local(String),
    /// Local training or evaluation failed.
    #[error("local training failed: {0}")]
    Training(String),
    /// The federation runs below this node's own floor (for example plaintext updates where this node requires
    /// secure aggregation); the refusal is in the node's ledger.
    #[error("{0}")]
    Policy(String),
}

/// Round settings sent with a training task.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct TaskSettings {
    /// Local epochs.
    pub local_epochs: u32,
    /// Learning rate.
    pub learning_rate: f64,
    /// Batch size for non-private training.
    pub batch_size: usize,
    /// FedProx coefficient, if any.
    #[serde(default)]
    pub proximal_mu: Option<f64>,
    /// Secure aggregation: the round's public data (None when updates travel in plaintext).
    #[serde(default)]
    pub secure: Option<RoundAnnouncement>,
    /// Secure aggregation: every participant's certificate and key-binding signature, relayed by the
    /// coordinator so that this node checks each participant's keys against the federation CA itself.
    #[serde(default)]
    pub secure_bindings: Vec<SignedBinding>,
}

/// The result of local training.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The locally trained parameters.
    pub params: Vec<f32>,
    /// Mean training loss.
    pub train_loss: f64,
    /// Number of training examples (the FedAvg weight).
    pub examples: u64,
}

/// The figures a node reports about its training data when it joins.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinReleases {
    /// Number of training examples (noisy under DP).
    pub examples: f64,
    /// Training examples per class (noisy under DP; empty when not reported).
    pub label_histogram: Vec<i64>,
}

/// Whether this node takes part in a round.
#[derive(Debug, Clone, PartialEq)]
pub enum Participation {
    /// Train.
    Train,
    /// Decline, with the reason and the ledger record of the decline (JSON).
    Decline {
        /// Why.
        reason: String,
        /// The signed ledger record, as JSON.
        record_json: String,
    },
}

/// The node's local work: training, evaluation and privacy decisions.
pub trait LocalWork: Send {
    /// Called once after joining, with the plan and the loaded data.
    ///
    /// # Errors
    /// [`ClientError`] when the plan cannot be served with this node's data or settings.
    fn prepare(&mut self, plan: &FederationPlan, data: &LocalData) -> Result<(), ClientError>;

    /// Decides whether to take part in `round`, enforcing the node's own privacy budget.
    ///
    /// # Errors
    /// [`ClientError`] when the decision cannot be made (for example a broken ledger).
    fn participate(&mut self, round: Round, settings: &TaskSettings) -> Result<Participation, ClientError>;

    /// Trains from `global`.
    ///
    /// # Errors
    /// [`ClientError::Training`].
    fn train(&mut self, round: Round, global: &[f32], settings: &TaskSettings) -> Result<TrainOutcome, ClientError>;

    /// Evaluates `params` on the held-out split.
    ///
    /// # Errors
    /// [`ClientError::Training`].
    fn evaluate(&mut self, params: &[f32]) -> Result<EvalMetrics, ClientError>;

    /// The evaluation this node reports for global model `version` (digest `model_sha256`, parameters `params`),
    /// given its exact local metrics `exact`. The default reports `exact` (a node without DP makes no privacy
    /// promise); a DP node reports a recorded DP release instead, and nothing exact.
    ///
    /// # Errors
    /// [`ClientError`] when the release cannot be made or recorded, or the node refuses to evaluate.
    fn release_evaluation(
        &mut self,
        version: ModelVersion,
        model_sha256: &str,
        params: &[f32],
        exact: &EvalMetrics,
    ) -> Result<EvalMetrics, ClientError> {
        let _ = (version, model_sha256, params);
        Ok(exact.clone())
    }

    /// Records that this node refuses a task (`round`, or the whole federation when None) because it runs
    /// below the node's own floor, and returns the signed ledger record as JSON for the decline message (empty
    /// when this node keeps no ledger).
    ///
    /// # Errors
    /// [`ClientError::Local`] when the ledger cannot be written.
    fn refuse(&mut self, round: Option<Round>, reason: &str) -> Result<String, ClientError> {
        let _ = (round, reason);
        Ok(String::new())
    }

    /// Ledger records appended since the last call, as JSON lines, for the coordinator's copy.
    fn take_ledger_lines(&mut self) -> String {
        String::new()
    }

    /// Called when a new session with the coordinator starts: the next [`LocalWork::take_ledger_lines`] must
    /// return the whole ledger, because records sent to a coordinator that then died may never have been
    /// stored. The coordinator skips the records it already has.
    fn resend_ledger(&mut self) {}

    /// The node's public keys (Ed25519 signing, X25519 encryption) to announce at join.
    fn public_keys(&self) -> (Vec<u8>, Vec<u8>) {
        (Vec::new(), Vec::new())
    }

    /// What the node reports about its data at join. The default reports the exact example count and no
    /// histogram; under DP these are OpenDP releases recorded in the node's ledger.
    ///
    /// # Errors
    /// [`ClientError::Local`] when a release cannot be made or recorded.
    fn join_releases(&mut self, data: &LocalData) -> Result<JoinReleases, ClientError> {
        Ok(JoinReleases { examples: data.train.rows() as f64, label_histogram: Vec::new() })
    }
}

/// What a node did over the federation.
#[derive(Debug, Clone)]
pub struct NodeReport {
    /// Rounds trained.
    pub rounds_trained: Vec<Round>,
    /// Rounds declined, with reasons.
    pub rounds_declined: Vec<(Round, String)>,
    /// The final global model.
    pub final_model: Vec<f32>,
    /// Its version.
    pub final_version: ModelVersion,
    /// This node's evaluation of the final model, if it ran one.
    pub final_metrics: Option<EvalMetrics>,
}

/// A connection to the coordinator.
#[derive(Debug)]
pub struct Session {
    client: FederationClient<Channel>,
    config: ClientConfig,
}

impl Session {
    /// Connects over mutual TLS, retrying for up to `patience` while the coordinator is not listening yet.
    ///
    /// # Errors
    /// [`ClientError`] for unreadable TLS files or an unreachable coordinator.
    pub async fn connect(config: &ClientConfig, patience: Duration) -> Result<Self, ClientError> {
        config.coordinator.check_url().map_err(|e| ClientError::Local(e.to_string()))?;
        let tls = client_tls(&config.tls.files(), &config.coordinator.tls_name())
            .map_err(|e| ClientError::Local(e.to_string()))?;
        let url = config.coordinator.url.clone();
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| ClientError::Local(format!("invalid coordinator url {url:?}: {e}")))?
            .tls_config(tls)
            .map_err(|e| ClientError::Local(e.to_string()))?
            .connect_timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(30));
        let give_up = tokio::time::Instant::now() + patience;
        let authority = url.split("://").nth(1).unwrap_or(&url).split('/').next().unwrap_or_default().to_owned();
        loop {
            match preflight(&authority, &config.coordinator.tls_name(), &config.tls.files())
                .await
                .map_err(|e| ClientError::Local(e.to_string()))?
            {
                Preflight::Accepted => break,
                Preflight::Refused(err) => {
                    let msg = diagnose_client_failure(&err, &config.tls.cert, &config.tls.ca_cert)
                        .unwrap_or_else(|| format!("the coordinator closed the TLS connection: {err}"));
                    return Err(ClientError::TlsRefused(msg));
                }
                Preflight::Unreachable(err) if tokio::time::Instant::now() >= give_up => {
                    return Err(ClientError::Unreachable { url, message: err.to_string() });
                }
                Preflight::Unreachable(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let channel = loop {
            match endpoint.connect().await {
                Ok(channel) => break channel,
                Err(err) => {
                    if let Some(msg) = diagnose_client_failure(&err, &config.tls.cert, &config.tls.ca_cert) {
                        return Err(ClientError::TlsRefused(msg));
                    }
                    if tokio::time::Instant::now() >= give_up {
                        return Err(ClientError::Unreachable { url, message: error_chain_text(&err) });
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let client = FederationClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self { client, config: config.clone() })
    }

    fn map_status(&self, status: tonic::Status) -> ClientError {
        if let Some(msg) = diagnose_client_failure(&status, &self.config.tls.cert, &self.config.tls.ca_cert) {
            return ClientError::TlsRefused(msg);
        }
        match status.code() {
            tonic::Code::PermissionDenied => ClientError::Refused(status.message().to_owned()),
            tonic::Code::Unauthenticated => ClientError::NotJoined(status.message().to_owned()),
            tonic::Code::Unavailable => ClientError::Unreachable {
                url: self.config.coordinator.url.clone(),
                message: error_chain_text(&status),
            },
            _ => ClientError::Protocol(format!("{:?}: {}", status.code(), status.message())),
        }
    }

    /// Joins the federation and returns its plan.
    ///
    /// # Errors
    /// [`ClientError`] when the coordinator refuses the node or sends an unusable plan.
    pub async fn join(&mut self, request: proto::JoinRequest) -> Result<FederationPlan, ClientError> {
        let response = self.client.join(request).await.map_err(|s| self.map_status(s))?.into_inner();
        let plan: FederationPlan = serde_json::from_str(&response.plan_json)
            .map_err(|e| ClientError::Protocol(format!("unreadable federation plan: {e}")))?;
        plan.model.validate().map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(plan)
    }

    /// Fetches the next task with its model.
    ///
    /// # Errors
    /// [`ClientError`] on a refused call or a malformed task stream.
    pub async fn fetch_task(
        &mut self,
        last_seen: proto::RoundRef,
    ) -> Result<(proto::TaskHeader, Vec<f32>), ClientError> {
        let mut stream = self
            .client
            .fetch_task(proto::TaskRequest { last_seen: Some(last_seen) })
            .await
            .map_err(|s| self.map_status(s))?
            .into_inner();
        let header = match stream.next().await {
            Some(Ok(proto::TaskChunk { body: Some(proto::task_chunk::Body::Header(h)) })) => h,
            Some(Err(s)) => return Err(self.map_status(s)),
            _ => return Err(ClientError::Protocol("task stream did not start with a header".into())),
        };
        let count = usize::try_from(header.parameter_count)
            .map_err(|_| ClientError::Protocol("parameter count does not fit this machine".into()))?;
        let mut body = BodyAssembler::new(count.saturating_mul(4));
        while let Some(chunk) = stream.next().await {
            match chunk.map_err(|s| self.map_status(s))?.body {
                Some(proto::task_chunk::Body::ModelChunk(bytes)) => {
                    body.push(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))?
                }
                _ => return Err(ClientError::Protocol("unexpected message in task stream".into())),
            }
        }
        let bytes = body.finish().map_err(|e| ClientError::Protocol(e.to_string()))?;
        let model = parameters_from_bytes(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if !model.is_empty() && parameters_sha256(&model) != header.model_sha256 {
            return Err(ClientError::Protocol("model digest does not match its header".into()));
        }
        Ok((header, model))
    }

    /// Uploads a plaintext delta in chunks.
    ///
    /// # Errors
    /// [`ClientError`] when the coordinator refuses the update.
    pub async fn upload(&mut self, header: proto::UpdateHeader, delta: &[f32]) -> Result<(), ClientError> {
        let bytes = parameters_to_bytes(delta);
        let mut messages = vec![proto::UpdateChunk { body: Some(proto::update_chunk::Body::Header(header)) }];
        messages.extend(
            wire::chunks(&bytes).map(|c| proto::UpdateChunk { body: Some(proto::update_chunk::Body::BodyChunk(c)) }),
        );
        self.client.upload_update(tokio_stream::iter(messages)).await.map_err(|s| self.map_status(s))?;
        Ok(())
    }

    /// Uploads encrypted bodies (`rlwe-bodies`, little-endian `u64`) in chunks.
    ///
    /// # Errors
    /// [`ClientError`] when the coordinator refuses the update.
    pub async fn upload_bodies(&mut self, header: proto::UpdateHeader, bodies: &[u64]) -> Result<(), ClientError> {
        let bytes = u64s_to_le(bodies);
        let mut messages = vec![proto::UpdateChunk { body: Some(proto::update_chunk::Body::Header(header)) }];
        messages.extend(
            wire::chunks(&bytes).map(|c| proto::UpdateChunk { body: Some(proto::update_chunk::Body::BodyChunk(c)) }),
        );
        self.client.upload_update(tokio_stream::iter(messages)).await.map_err(|s| self.map_status(s))?;
        Ok(())
    }

    /// Sends this node's sealed key shares, `(recipient, envelope)`, with its consent signature over the
    /// round's announcement.
    ///
    /// # Errors
    /// [`ClientError`] when the coordinator refuses them.
    pub async fn submit_shares(
        &mut self,
        round: proto::RoundRef,
        envelopes: Vec<(String, Vec<u8>)>,
        consent: [u8; 64],
    ) -> Result<(), ClientError> {
        let envelopes =
            envelopes.into_iter().map(|(recipient, sealed)| proto::Envelope { recipient, sealed }).collect();
        self.client
            .submit_shares(proto::ShareSubmission {
                round: Some(round),
                envelopes,
                consent_signature: consent.to_vec(),
            })
            .await
            .map_err(|s| self.map_status(s))?;
        Ok(())
    }

    /// Fetches the key shares addressed to this node, waiting while share distribution is open.
    /// Returns the key holders and `(sender, envelope)` pairs.
    ///
    /// # Errors
    /// [`ClientError`] when the coordinator refuses (for example: this node is not a key holder).
    pub async fn fetch_shares(
        &mut self,
        round: proto::RoundRef,
    ) -> Result<(Vec<String>, Vec<(String, Vec<u8>)>), ClientError> {
        loop {
            let bundle = self
                .client
                .fetch_shares(proto::ShareRequest { round: Some(round.clone()) })
                .await
                .map_err(|s| self.map_status(s))?
                .into_inner();
            if !bundle.ready {
                continue;
            }
            let holders: Vec<String> = serde_json::from_str(&bundle.participants_json)
                .map_err(|e| ClientError::Protocol(format!("unreadable key holder list: {e}")))?;
            return Ok((holders, bundle.envelopes.into_iter().map(|e| (e.sender, e.sealed)).collect()));
        }
    }

    /// Streams this node's partial decryption.
    ///
    /// # Errors
    /// [`ClientError`] when the coordinator refuses it.
    pub async fn submit_partial(&mut self, round: proto::RoundRef, values: &[u64]) -> Result<(), ClientError> {
        let bytes = u64s_to_le(values);
        let header = proto::PartialHeader { round: Some(round), coefficient_count: values.len() as u64 };
        let mut messages = vec![proto::PartialChunk { body: Some(proto::partial_chunk::Body::Header(header)) }];
        messages.extend(
            wire::chunks(&bytes).map(|c| proto::PartialChunk { body: Some(proto::partial_chunk::Body::BodyChunk(c)) }),
        );
        self.client.submit_partial_decryption(tokio_stream::iter(messages)).await.map_err(|s| self.map_status(s))?;
        Ok(())
    }

    /// Declines a round.
    ///
    /// # Errors
    /// [`ClientError`] when the call fails.
    pub async fn decline(&mut self, request: proto::DeclineRequest) -> Result<(), ClientError> {
        self.client.decline(request).await.map_err(|s| self.map_status(s))?;
        Ok(())
    }

    /// Reports evaluation metrics.
    ///
    /// # Errors
    /// [`ClientError`] when the call fails.
    pub async fn report(&mut self, request: proto::EvaluationReport) -> Result<(), ClientError> {
        self.client.report_evaluation(request).await.map_err(|s| self.map_status(s))?;
        Ok(())
    }
}

fn u64s_to_le(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Whether the coordinator moved on from the round this message was about (a failed or closed
/// secure round): the node drops the round and asks for its next task.
fn round_moved_on(err: &ClientError) -> bool {
    matches!(err, ClientError::Protocol(m) if m.starts_with("FailedPrecondition"))
}

/// What a node needs for secure rounds: its identity, the federation CA to check the others' keys, and the
/// journal of the rounds it answered.
struct SecureContext {
    identity: NodeIdentity,
    trust: FederationTrust,
    journal: SqliteJournal,
}

/// Declines `rref`'s round for `reason`: the refusal goes into the node's ledger and to the coordinator.
async fn decline(
    session: &mut Session,
    rref: &proto::RoundRef,
    reason: String,
    record_json: String,
    report: &mut NodeReport,
) -> Result<(), ClientError> {
    let round = Round(rref.round);
    tracing::warn!(round = round.0, "declining round: {reason}");
    session
        .decline(proto::DeclineRequest {
            round: Some(rref.clone()),
            reason: reason.clone(),
            ledger_record_json: record_json,
        })
        .await?;
    report.rounds_declined.push((round, reason));
    Ok(())
}

/// What became of a secure training round.
enum SecureOutcome {
    /// The encrypted update is in; the round state is kept for the decryption request.
    Uploaded(Box<ClientRound>),
    /// The announcement was refused, with this reason (it goes into the ledger and to the coordinator).
    Refused(String),
    /// The coordinator moved on from the round.
    MovedOn,
}

/// One secure training round: check the announcement, share the round key with this node's consent, train,
/// open the shares addressed to this node, encrypt the delta and upload it.
#[allow(clippy::too_many_arguments)]
async fn train_secure(
    session: &mut Session,
    config: &ClientConfig,
    secure: &SecureContext,
    work: &mut dyn LocalWork,
    announcement: RoundAnnouncement,
    rref: &proto::RoundRef,
    model: &[f32],
    settings: &TaskSettings,
) -> Result<SecureOutcome, ClientError> {
    let round = Round(rref.round);
    let verifier = Verifier {
        federation: &config.federation_id,
        me: &config.name,
        policy: &config.secure_aggregation,
        trust: &secure.trust,
        now: UnixTime::now(),
    };
    let mut state = match ClientRound::new(
        announcement,
        &settings.secure_bindings,
        &verifier,
        &secure.identity,
        model,
        &secure.journal,
    ) {
        Ok(state) => state,
        Err(e @ secagg::SecureClientError::Journal(_)) => return Err(ClientError::Local(e.to_string())),
        Err(e) => return Ok(SecureOutcome::Refused(e.to_string())),
    };
    let protocol = |e: secagg::SecureClientError| ClientError::Protocol(e.to_string());
    let envelopes = state.seal_shares(&secure.identity).map_err(protocol)?;
    let consent = state.consent(&secure.identity);
    match session.submit_shares(rref.clone(), envelopes, consent.signature).await {
        Err(e) if round_moved_on(&e) => {
            tracing::warn!(node = %config.name, round = round.0, "secure round closed before this node's shares arrived: {e}");
            return Ok(SecureOutcome::MovedOn);
        }
        other => other?,
    }
    let outcome = compute(|| work.train(round, model, settings))?;
    let delta: Vec<f32> = outcome.params.iter().zip(model).map(|(w, g)| w - g).collect();
    let (holders, envelopes) = match session.fetch_shares(rref.clone()).await {
        Err(e) if round_moved_on(&e) => {
            tracing::warn!(node = %config.name, round = round.0, "not a key holder of this secure round: {e}");
            return Ok(SecureOutcome::MovedOn);
        }
        other => other?,
    };
    state.receive_shares(&secure.identity, &holders, &envelopes).map_err(protocol)?;
    let bodies = state.encrypt(&delta, outcome.examples).map_err(protocol)?;
    drop(delta);
    let header = proto::UpdateHeader {
        round: Some(rref.clone()),
        // The weight travels encrypted in the last body coordinate; nothing per client travels in clear.
        parameter_count: bodies.len() as u64,
        train_loss: f64::NAN,
        encoding: "rlwe-bodies".into(),
    };
    match session.upload_bodies(header, &bodies).await {
        Err(e) if round_moved_on(&e) => {
            tracing::warn!(node = %config.name, round = round.0, "encrypted upload refused: {e}");
            Ok(SecureOutcome::MovedOn)
        }
        Err(e) => Err(e),
        Ok(()) => Ok(SecureOutcome::Uploaded(Box::new(state))),
    }
}

/// How long a node keeps trying to reach a coordinator that went away (for example, restarted) before giving up.
const RECONNECT_PATIENCE: Duration = Duration::from_secs(120);

/// Runs CPU-heavy local work (training, evaluation). On a multi-threaded runtime it tells tokio that this
/// thread blocks, so the runtime moves its other tasks (other nodes, a coordinator in the same process)
/// elsewhere; on a current-thread runtime it simply runs.
fn compute<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn is_transient(err: &ClientError) -> bool {
    matches!(err, ClientError::Unreachable { .. } | ClientError::NotJoined(_))
        || matches!(err, ClientError::Protocol(m) if m.starts_with("Unavailable") || m.starts_with("Cancelled") || m.starts_with("Unknown"))
}

/// Runs a node until the federation finishes. If the coordinator goes away mid-run (a restart), the node
/// reconnects, joins again and carries on from the coordinator's last completed round.
///
/// # Errors
/// [`ClientError`] when the node is refused, its data does not fit, or the coordinator stays away.
pub async fn run(config: &ClientConfig, work: &mut dyn LocalWork) -> Result<NodeReport, ClientError> {
    let mut report = NodeReport {
        rounds_trained: Vec::new(),
        rounds_declined: Vec::new(),
        final_model: Vec::new(),
        final_version: ModelVersion(0),
        final_metrics: None,
    };
    let mut prepared: Option<(FederationPlan, LocalData)> = None;
    let mut patience = Duration::from_secs(60);
    loop {
        match run_session(config, work, &mut prepared, &mut report, patience).await {
            Ok(()) => return Ok(report),
            Err(err) if is_transient(&err) && prepared.is_some() => {
                tracing::warn!(node = %config.name, "lost the coordinator ({err}); reconnecting");
                patience = RECONNECT_PATIENCE;
            }
            Err(err) => return Err(err),
        }
    }
}

/// One connection's worth of the node's life: connect, join, then serve tasks until the federation finishes.
async fn run_session(
    config: &ClientConfig,
    work: &mut dyn LocalWork,
    prepared: &mut Option<(FederationPlan, LocalData)>,
    report: &mut NodeReport,
    patience: Duration,
) -> Result<(), ClientError> {
    let mut session = Session::connect(config, patience).await?;
    let (signing, _) = work.public_keys();
    // The long-term secure-aggregation identity (X25519 for share envelopes, Ed25519 for their
    // signatures), announced at every join so the coordinator can run secure rounds, and bound to this node's
    // certificate together with its ledger key.
    let local = |e: &dyn std::fmt::Display| ClientError::Local(e.to_string());
    let identity = secagg::load_or_create_identity(&config.data_dir).map_err(|e| local(&e))?;
    let encryption = identity.public_keys().x25519.to_vec();
    let share_signing = identity.public_keys().ed25519.to_vec();
    let bound = BoundKeys {
        x25519: identity.public_keys().x25519,
        share_ed25519: identity.public_keys().ed25519,
        ledger_ed25519: <[u8; 32]>::try_from(signing.as_slice()).ok(),
    };
    let key_binding_signature = CertSigner::load(&config.tls.key)
        .and_then(|signer| signer.sign(&config.federation_id, &config.name, Role::Client, &bound))
        .map_err(|e| local(&e))?;
    let mut secure = SecureContext {
        identity,
        trust: FederationTrust::load(&config.tls.ca_cert).map_err(|e| local(&e))?,
        journal: SqliteJournal::open(&config.data_dir, &config.federation_id).map_err(|e| local(&e))?,
    };
    // Join to learn the plan, load the data against its schema (once), then join again with the data fingerprint
    // and the (noisy) example count.
    let plan = session
        .join(proto::JoinRequest {
            federation_id: config.federation_id.clone(),
            signing_public_key: signing.clone(),
            encryption_public_key: encryption.clone(),
            data_fingerprint: String::new(),
            reported_examples: 0.0,
            share_signing_public_key: share_signing.clone(),
            label_histogram: Vec::new(),
            key_binding_signature: key_binding_signature.clone(),
        })
        .await?;
    if config.secure_aggregation.required && plan.secure_aggregation.mode == SecureAggregationMode::None {
        let reason = format!(
            "this node requires secure aggregation ([secure_aggregation] required = true in its config), but federation \
             {} sends updates in plaintext (its coordinator runs secure_aggregation mode = \"none\"); ask the \
             coordinator's operator to set mode = \"threshold-rlwe\", or set required = false on this node if the \
             federation agreed to plaintext updates",
            plan.federation_id
        );
        work.refuse(None, &reason)?;
        return Err(ClientError::Policy(reason));
    }
    if prepared.as_ref().is_none_or(|(p, _)| *p != plan) {
        let secret = NodeSecret::load_or_create(&config.data_dir).map_err(|e| ClientError::Local(e.to_string()))?;
        let local = data::prepare(
            &config.data.path,
            &plan.schema,
            config.data.holdout_fraction,
            config.data.split_seed,
            &secret,
        )?;
        if local.train.dims != plan.model.inputs() {
            return Err(ClientError::Protocol(format!(
                "the federation model takes {} inputs but the schema has {} features",
                plan.model.inputs(),
                local.train.dims
            )));
        }
        work.prepare(&plan, &local)?;
        *prepared = Some((plan.clone(), local));
    }
    let local =
        prepared.as_ref().map(|(_, l)| l.clone()).ok_or_else(|| ClientError::Local("data not loaded".into()))?;
    let releases = work.join_releases(&local)?;
    session
        .join(proto::JoinRequest {
            federation_id: plan.federation_id.clone(),
            signing_public_key: signing,
            encryption_public_key: encryption,
            data_fingerprint: local.fingerprint.clone(),
            reported_examples: releases.examples,
            share_signing_public_key: share_signing,
            label_histogram: releases.label_histogram,
            key_binding_signature,
        })
        .await?;
    tracing::info!(node = %config.name, rows = local.train.rows(), holdout = local.holdout.rows(), "joined federation {}", plan.federation_id);
    work.resend_ledger();

    let fed = plan.federation_id.clone();
    let mut last = wire::round_ref(&fed, Round(0), ModelVersion(0));
    // This node's key material of the current secure round, kept for its decryption request.
    let mut secure_round: Option<Box<ClientRound>> = None;
    loop {
        let (header, model) = session.fetch_task(last.clone()).await?;
        let rref = header.round.clone().ok_or_else(|| ClientError::Protocol("task without round reference".into()))?;
        if rref.federation_id != fed {
            return Err(ClientError::Protocol(format!(
                "task for federation {:?}, expected {fed:?}",
                rref.federation_id
            )));
        }
        let round = Round(rref.round);
        match proto::TaskKind::try_from(header.kind).unwrap_or(proto::TaskKind::Unspecified) {
            proto::TaskKind::Wait => {
                tokio::time::sleep(Duration::from_millis(header.retry_after_ms.clamp(10, 5000))).await;
            }
            proto::TaskKind::Train => {
                if model.len() != plan.model.parameter_count() {
                    return Err(ClientError::Protocol(format!(
                        "model has {} parameters, the plan says {}",
                        model.len(),
                        plan.model.parameter_count()
                    )));
                }
                let settings: TaskSettings = serde_json::from_str(&header.settings_json)
                    .map_err(|e| ClientError::Protocol(format!("unreadable round settings: {e}")))?;
                if settings.secure.is_none() && config.secure_aggregation.required {
                    let reason = "refusing a plaintext training task: this node requires secure aggregation \
                                  ([secure_aggregation] required = true)"
                        .to_owned();
                    let record_json = work.refuse(Some(round), &reason)?;
                    decline(&mut session, &rref, reason, record_json, report).await?;
                    last = rref;
                    continue;
                }
                match work.participate(round, &settings)? {
                    Participation::Decline { reason, record_json } => {
                        decline(&mut session, &rref, reason, record_json, report).await?;
                    }
                    Participation::Train if settings.secure.is_some() => {
                        let announcement = settings
                            .secure
                            .clone()
                            .ok_or_else(|| ClientError::Protocol("secure round data missing".into()))?;
                        secure_round = None;
                        match train_secure(&mut session, config, &secure, work, announcement, &rref, &model, &settings)
                            .await?
                        {
                            SecureOutcome::Uploaded(state) => {
                                secure_round = Some(state);
                                report.rounds_trained.push(round);
                            }
                            SecureOutcome::Refused(reason) => {
                                let record_json = work.refuse(Some(round), &reason)?;
                                decline(&mut session, &rref, reason, record_json, report).await?;
                            }
                            SecureOutcome::MovedOn => {}
                        }
                    }
                    Participation::Train => {
                        let outcome = compute(|| work.train(round, &model, &settings))?;
                        let delta: Vec<f32> = outcome.params.iter().zip(&model).map(|(w, g)| w - g).collect();
                        session
                            .upload(
                                proto::UpdateHeader {
                                    round: Some(rref.clone()),
                                    parameter_count: delta.len() as u64,
                                    train_loss: outcome.train_loss,
                                    encoding: "f32-delta".into(),
                                },
                                &delta,
                            )
                            .await?;
                        report.rounds_trained.push(round);
                    }
                }
                last = rref;
            }
            proto::TaskKind::Evaluate => {
                // The round's key material is no longer needed; drop (and zeroize) it.
                secure_round = None;
                // The exact figures stay on the node (in its report); what leaves is the node's release of them.
                let metrics = compute(|| work.evaluate(&model))?;
                let version = ModelVersion(rref.model_version);
                let released =
                    match compute(|| work.release_evaluation(version, &header.model_sha256, &model, &metrics)) {
                        Ok(released) => released,
                        Err(e @ ClientError::Policy(_)) => {
                            tracing::warn!(node = %config.name, version = version.0, "{e}");
                            EvalMetrics { examples: 0, values: Default::default() }
                        }
                        Err(e) => return Err(e),
                    };
                // The held-out count stays here too: the coordinator weights reports by the join count.
                let sent = EvalMetrics { examples: 0, ..released };
                let metrics_json = serde_json::to_string(&sent).map_err(|e| ClientError::Local(e.to_string()))?;
                session
                    .report(proto::EvaluationReport {
                        round: Some(rref.clone()),
                        metrics_json,
                        ledger_jsonl: work.take_ledger_lines(),
                    })
                    .await?;
                report.final_metrics = Some(metrics);
                last = rref;
            }
            proto::TaskKind::Finished => {
                report.final_model = model;
                report.final_version = ModelVersion(rref.model_version);
                return Ok(());
            }
            proto::TaskKind::Decrypt => {
                let request: DecryptionRequest = serde_json::from_str(&header.settings_json)
                    .map_err(|e| ClientError::Protocol(format!("unreadable decryption request: {e}")))?;
                let answer = match secure_round.as_mut().filter(|s| s.round_id() == request.round) {
                    Some(state) => state.answer(&request, &mut secure.journal).map_err(|e| e.to_string()),
                    None => Err("this node holds no key shares for the round".to_owned()),
                };
                match answer {
                    Ok(partial) => match session.submit_partial(rref.clone(), &partial.values).await {
                        Err(e) if round_moved_on(&e) => {
                            tracing::warn!(node = %config.name, round = round.0, "partial decryption refused: {e}");
                        }
                        other => other?,
                    },
                    Err(reason) => {
                        tracing::warn!(node = %config.name, round = round.0, "refusing a decryption request: {reason}");
                        tokio::time::sleep(Duration::from_millis(header.retry_after_ms.clamp(10, 5000))).await;
                    }
                }
                last = rref;
            }
            proto::TaskKind::Unspecified => {
                return Err(ClientError::Protocol(format!("unsupported task kind {}", header.kind)));
            }
        }
    }
}

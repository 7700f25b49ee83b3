//! The client node's loop: connect over mutual TLS, join, then poll for tasks, train or evaluate, and upload.
//!
//! Protocol logic only: the local work (training, evaluation, privacy budget) is behind [`LocalWork`], so the
//! loop is the same for every model and privacy setting.

use crate::data::{self, LocalData};
use crate::journal::SqliteJournal;
use crate::link::{CoordinatorLink, GrpcLink};
use crate::outbound::Outbound;
use crate::secure::{self as secagg, ClientRound, Verifier};
use cohort_core::binding::{BoundKeys, CertSigner, FederationTrust, UnixTime};
use cohort_core::config::{ClientConfig, FederationPlan, SecureAggregationMode};
use cohort_core::ledger::LedgerRecord;
use cohort_core::metrics::EvalMetrics;
use cohort_core::pki::Role;
use cohort_core::protocol::codec::{f32s_to_le, u64s_to_le};
use cohort_core::protocol::{
    Assignment, BodyEncoding, DataReport, Decline, EvaluationReport, JoinKeys, JoinRequest, PartialHeader, RoundRef,
    SecureRoundData, ShareSubmission, TaskHeader, UpdateHeader,
};
use cohort_core::secret::NodeSecret;
use cohort_core::{ModelVersion, NodeName, Round};
use cohort_crypto::NodeIdentity;
use std::time::Duration;

pub use cohort_core::protocol::TrainSettings;

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
    /// The coordinator refused a message because the federation moved on (a late upload for a round that
    /// closed, an answer it already has); the node carries on with its next task.
    #[error("the coordinator moved on: {0}")]
    Late(String),
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

impl From<cohort_core::protocol::BodyError> for ClientError {
    /// A streamed body from the coordinator that does not match its header.
    fn from(e: cohort_core::protocol::BodyError) -> Self {
        Self::Protocol(e.to_string())
    }
}

/// The result of local training: every field may leave the node, each on its own [`Outbound`] basis.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The locally trained parameters (under DP, released by the round's DP-SGD record).
    pub params: Outbound<Vec<f32>>,
    /// Mean training loss; None when it may not leave the node (under DP it is not a recorded release).
    pub train_loss: Option<Outbound<f64>>,
    /// Number of training examples, the FedAvg weight (under DP, the noisy join count).
    pub examples: Outbound<u64>,
}

/// The figures a node reports about its training data when it joins.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinReleases {
    /// Number of training examples (noisy under DP).
    pub examples: Outbound<f64>,
    /// Training examples per class (noisy under DP; empty when not reported).
    pub label_histogram: Outbound<Vec<i64>>,
}

/// Whether this node takes part in a round.
#[derive(Debug, Clone, PartialEq)]
pub enum Participation {
    /// Train.
    Train,
    /// Decline, with the reason and the ledger record of the decline.
    Decline {
        /// Why.
        reason: String,
        /// The signed ledger record, when the node keeps a ledger.
        record: Option<Box<LedgerRecord>>,
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
    fn participate(&mut self, round: Round, settings: &TrainSettings) -> Result<Participation, ClientError>;

    /// Trains from `global`.
    ///
    /// # Errors
    /// [`ClientError::Training`].
    fn train(&mut self, round: Round, global: &[f32], settings: &TrainSettings) -> Result<TrainOutcome, ClientError>;

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
    ) -> Result<Outbound<EvalMetrics>, ClientError> {
        let _ = (version, model_sha256, params);
        Ok(Outbound::unprotected(exact.clone()))
    }

    /// Records that this node refuses a task (`round`, or the whole federation when None) because it runs
    /// below the node's own floor, and returns the signed ledger record for the decline message (None when
    /// this node keeps no ledger).
    ///
    /// # Errors
    /// [`ClientError::Local`] when the ledger cannot be written.
    fn refuse(&mut self, round: Option<Round>, reason: &str) -> Result<Option<LedgerRecord>, ClientError> {
        let _ = (round, reason);
        Ok(None)
    }

    /// Ledger records appended since the last call, for the coordinator's copy.
    fn take_ledger_records(&mut self) -> Vec<LedgerRecord> {
        Vec::new()
    }

    /// Called when a new session with the coordinator starts: the next [`LocalWork::take_ledger_records`] must
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
        Ok(JoinReleases {
            examples: Outbound::unprotected(data.train.rows() as f64),
            label_histogram: Outbound::data_free(Vec::new()),
        })
    }
}

/// What a node did over the federation.
#[derive(Debug, Clone, Default)]
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

/// Whether the coordinator moved on from the round this message was about (a failed or closed
/// secure round): the node drops the round and asks for its next task.
fn round_moved_on(err: &ClientError) -> bool {
    matches!(err, ClientError::Late(_))
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
    link: &mut impl CoordinatorLink,
    rref: &RoundRef,
    reason: String,
    record: Option<LedgerRecord>,
    report: &mut NodeReport,
) -> Result<(), ClientError> {
    tracing::warn!(round = rref.round.0, "declining round: {reason}");
    link.decline(Decline { round: rref.clone(), reason: reason.clone(), record }).await?;
    report.rounds_declined.push((rref.round, reason));
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

/// The update of a round, `trained - global`, clipped to the federation's `max_update_norm`. Clipping a DP
/// release is post-processing, so it costs no privacy; the coordinator refuses a plaintext update beyond the
/// bound, and under secure aggregation honest clients bound themselves the same way.
fn bounded_delta(trained: &[f32], global: &[f32], max_update_norm: f64, round: Round) -> Vec<f32> {
    let mut delta: Vec<f32> = trained.iter().zip(global).map(|(w, g)| w - g).collect();
    let norm = cohort_model::layout::clip_to_norm(&mut delta, max_update_norm);
    if norm > max_update_norm {
        tracing::info!(round = round.0, "update norm {norm:.4} clipped to the federation's bound {max_update_norm}");
    } else {
        tracing::debug!(round = round.0, "update norm {norm:.4} within the federation's bound {max_update_norm}");
    }
    delta
}

/// One secure training round: check the announcement, share the round key with this node's consent, train,
/// open the shares addressed to this node, encrypt the delta and upload it.
#[allow(clippy::too_many_arguments)]
async fn train_secure(
    link: &mut impl CoordinatorLink,
    config: &ClientConfig,
    secure: &SecureContext,
    work: &mut dyn LocalWork,
    round_data: SecureRoundData,
    rref: &RoundRef,
    model: &[f32],
    settings: &TrainSettings,
    max_update_norm: f64,
) -> Result<SecureOutcome, ClientError> {
    let round = rref.round;
    let verifier = Verifier {
        federation: &config.federation_id,
        me: &config.name,
        policy: &config.secure_aggregation,
        trust: &secure.trust,
        now: UnixTime::now(),
    };
    let SecureRoundData { announcement, bindings } = round_data;
    let mut state = match ClientRound::new(announcement, &bindings, &verifier, &secure.identity, model, &secure.journal)
    {
        Ok(state) => state,
        Err(e @ secagg::SecureClientError::Journal(_)) => return Err(ClientError::Local(e.to_string())),
        Err(e) => return Ok(SecureOutcome::Refused(e.to_string())),
    };
    let protocol = |e: secagg::SecureClientError| ClientError::Protocol(e.to_string());
    let envelopes = state.seal_shares(&secure.identity).map_err(protocol)?;
    let consent = state.consent(&secure.identity);
    let shares = ShareSubmission {
        round: rref.clone(),
        envelopes: envelopes.into_iter().map(|(to, sealed)| (NodeName(to), sealed)).collect(),
        consent: consent.signature.to_vec(),
    };
    match link.submit_shares(shares).await {
        Err(e) if round_moved_on(&e) => {
            tracing::warn!(node = %config.name, round = round.0, "secure round closed before this node's shares arrived: {e}");
            return Ok(SecureOutcome::MovedOn);
        }
        other => other?,
    }
    let outcome = compute(|| work.train(round, model, settings))?;
    let private = config.privacy.enabled;
    let params = outcome.params.send("the update", private)?;
    let weight = outcome.examples.send("the FedAvg weight", private)?;
    let delta = bounded_delta(&params, model, max_update_norm, round);
    let bundle = loop {
        match link.fetch_shares(rref.clone()).await {
            Err(e) if round_moved_on(&e) => {
                tracing::warn!(node = %config.name, round = round.0, "not a key holder of this secure round: {e}");
                return Ok(SecureOutcome::MovedOn);
            }
            Ok(bundle) if bundle.ready => break bundle,
            Ok(_) => continue,
            Err(e) => return Err(e),
        }
    };
    let holders: Vec<String> = bundle.key_holders.into_iter().map(|n| n.0).collect();
    let envelopes: Vec<(String, Vec<u8>)> = bundle.envelopes.into_iter().map(|(from, e)| (from.0, e)).collect();
    state.receive_shares(&secure.identity, &holders, &envelopes).map_err(protocol)?;
    let bodies = state.encrypt(&delta, weight).map_err(protocol)?;
    drop(delta);
    // The weight travels encrypted in the last body coordinate; nothing per client travels in clear.
    let header = UpdateHeader {
        round: rref.clone(),
        value_count: bodies.len() as u64,
        encoding: BodyEncoding::RlweBodies,
        train_loss: None,
    };
    match link.upload(header, u64s_to_le(&bodies)).await {
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

/// Runs a node until the federation finishes, over gRPC and mutual TLS. If the coordinator goes away mid-run (a
/// restart), the node reconnects, joins again and carries on from the coordinator's last completed round.
///
/// # Errors
/// [`ClientError`] when the node is refused, its data does not fit, or the coordinator stays away.
pub async fn run(config: &ClientConfig, work: &mut dyn LocalWork) -> Result<NodeReport, ClientError> {
    run_prepared(config, work, None).await
}

/// [`run`] with the node's data already loaded for `plan` (a simulation deals rows out in memory): when the
/// federation's plan is `plan`, the node uses `data` (for which `work` must already be prepared) instead of
/// reading `config.data`.
///
/// # Errors
/// As [`run`].
pub async fn run_prepared(
    config: &ClientConfig,
    work: &mut dyn LocalWork,
    mut prepared: Option<(FederationPlan, LocalData)>,
) -> Result<NodeReport, ClientError> {
    let mut report = NodeReport::default();
    let mut patience = Duration::from_secs(60);
    loop {
        let outcome = match GrpcLink::connect(config, patience).await {
            Ok(mut link) => run_session(&mut link, config, work, &mut prepared, &mut report).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => return Ok(report),
            Err(err) if is_transient(&err) && prepared.is_some() => {
                tracing::warn!(node = %config.name, "lost the coordinator ({err}); reconnecting");
                patience = RECONNECT_PATIENCE;
            }
            Err(err) => return Err(err),
        }
    }
}

/// One connection's worth of the node's life over `link`: join, then serve tasks until the federation finishes.
///
/// # Errors
/// [`ClientError`] when the node is refused, its data does not fit, or the link fails.
pub async fn run_session(
    link: &mut impl CoordinatorLink,
    config: &ClientConfig,
    work: &mut dyn LocalWork,
    prepared: &mut Option<(FederationPlan, LocalData)>,
    report: &mut NodeReport,
) -> Result<(), ClientError> {
    let (signing, _) = work.public_keys();
    // The long-term secure-aggregation identity (X25519 for share envelopes, Ed25519 for their
    // signatures), announced at every join so the coordinator can run secure rounds, and bound to this node's
    // certificate together with its ledger key.
    let local = |e: &dyn std::fmt::Display| ClientError::Local(e.to_string());
    let identity = secagg::load_or_create_identity(&config.data_dir).map_err(|e| local(&e))?;
    let bound = BoundKeys {
        x25519: identity.public_keys().x25519,
        share_ed25519: identity.public_keys().ed25519,
        ledger_ed25519: <[u8; 32]>::try_from(signing.as_slice()).ok(),
    };
    let binding_signature = CertSigner::load(&config.tls.key)
        .and_then(|signer| signer.sign(&config.federation_id, &config.name, Role::Client, &bound))
        .map_err(|e| local(&e))?;
    let keys = JoinKeys {
        ledger: signing,
        encryption: bound.x25519.to_vec(),
        share_signing: bound.share_ed25519.to_vec(),
        binding_signature,
    };
    let trust = FederationTrust::load(&config.tls.ca_cert).map_err(|e| local(&e))?;
    // Join to learn the plan, load the data against its schema (once), then join again with the data report.
    let join = JoinRequest { federation_id: config.federation_id.clone(), keys: keys.clone(), data: None };
    let plan = link.join(join).await?.plan;
    // The journal of answered secure rounds, created (and checked) only for a federation that runs them.
    let journal = match plan.secure_aggregation.mode {
        SecureAggregationMode::None => SqliteJournal::unopened(&config.data_dir, &config.federation_id),
        _ => SqliteJournal::open(&config.data_dir, &config.federation_id).map_err(|e| local(&e))?,
    };
    let secure = SecureContext { identity, trust, journal };
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
    let (_, local) = prepared.as_ref().ok_or_else(|| ClientError::Local("data not loaded".into()))?;
    let releases = work.join_releases(local)?;
    let private = config.privacy.enabled;
    let data = DataReport {
        // A keyed hash under the node's secret, which never leaves it: nothing about the rows can be recovered
        // or tested from it without the secret.
        fingerprint: local.fingerprint.clone(),
        examples: releases.examples.send("the join's example count", private)?,
        label_histogram: releases.label_histogram.send("the join's label histogram", private)?,
    };
    link.join(JoinRequest { federation_id: plan.federation_id.clone(), keys, data: Some(data) }).await?;
    tracing::info!(node = %config.name, rows = local.train.rows(), holdout = local.holdout.rows(), "joined federation {}", plan.federation_id);
    work.resend_ledger();

    let fed = plan.federation_id.clone();
    let mut last = RoundRef::new(&fed, Round(0), ModelVersion(0));
    let mut node = Tasks { link, config, work, report, plan: &plan, secure, secure_round: None };
    loop {
        let (header, model) = node.link.fetch_task(last.clone()).await?;
        let TaskHeader { round: rref, retry_after, assignment, model_sha256, .. } = header;
        if rref.federation_id != fed {
            return Err(ClientError::Protocol(format!(
                "task for federation {:?}, expected {fed:?}",
                rref.federation_id
            )));
        }
        let pause = retry_after.clamp(Duration::from_millis(10), Duration::from_secs(5));
        let done = match assignment {
            Assignment::Wait => {
                tokio::time::sleep(pause).await;
                continue;
            }
            Assignment::Train(settings) => {
                tracing::info!(node = %config.name, round = rref.round.0, version = rref.version.0, "training task");
                node.train(&rref, &settings, &model).await
            }
            Assignment::Evaluate => {
                tracing::info!(node = %config.name, round = rref.round.0, version = rref.version.0, "evaluation task");
                node.evaluate(&rref, &model_sha256, &model).await
            }
            Assignment::Decrypt(request) => node.decrypt(&rref, &request, pause).await,
            Assignment::Finished => {
                node.report.final_model = model;
                node.report.final_version = rref.version;
                return Ok(());
            }
        };
        match done {
            // A straggler: the round closed without this node's answer. Nothing is lost (its ledger already
            // holds whatever it spent); it takes the next task.
            Err(ClientError::Late(why)) => {
                tracing::warn!(node = %config.name, round = rref.round.0, "the coordinator moved on ({why}); waiting for the next task");
            }
            other => other?,
        }
        last = rref;
    }
}

/// A joined node serving its tasks: one handler per task kind.
struct Tasks<'a, L> {
    link: &'a mut L,
    config: &'a ClientConfig,
    work: &'a mut dyn LocalWork,
    report: &'a mut NodeReport,
    plan: &'a FederationPlan,
    secure: SecureContext,
    /// This node's key material of the current secure round, kept for its decryption request.
    secure_round: Option<Box<ClientRound>>,
}

impl<L: CoordinatorLink> Tasks<'_, L> {
    /// Trains `model` for the round of `rref` (or declines it), under secure aggregation when the round runs it.
    async fn train(&mut self, rref: &RoundRef, settings: &TrainSettings, model: &[f32]) -> Result<(), ClientError> {
        let round = rref.round;
        if model.len() != self.plan.model.parameter_count() {
            return Err(ClientError::Protocol(format!(
                "model has {} parameters, the plan says {}",
                model.len(),
                self.plan.model.parameter_count()
            )));
        }
        if settings.secure.is_none() && self.config.secure_aggregation.required {
            let reason = "refusing a plaintext training task: this node requires secure aggregation \
                          ([secure_aggregation] required = true)"
                .to_owned();
            let record = self.work.refuse(Some(round), &reason)?;
            return decline(self.link, rref, reason, record, self.report).await;
        }
        if let Participation::Decline { reason, record } = self.work.participate(round, settings)? {
            return decline(self.link, rref, reason, record.map(|r| *r), self.report).await;
        }
        let Some(round_data) = settings.secure.clone() else {
            let outcome = compute(|| self.work.train(round, model, settings))?;
            let private = self.config.privacy.enabled;
            let params = outcome.params.send("the update", private)?;
            let train_loss = outcome.train_loss.map(|l| l.send("the training loss", private)).transpose()?;
            let delta = bounded_delta(&params, model, self.plan.influence.max_update_norm, round);
            let header = UpdateHeader {
                round: rref.clone(),
                value_count: delta.len() as u64,
                encoding: BodyEncoding::F32Delta,
                train_loss,
            };
            self.link.upload(header, f32s_to_le(&delta)).await?;
            self.report.rounds_trained.push(round);
            return Ok(());
        };
        self.secure_round = None;
        let bound = self.plan.influence.max_update_norm;
        let outcome =
            train_secure(self.link, self.config, &self.secure, self.work, round_data, rref, model, settings, bound)
                .await?;
        match outcome {
            SecureOutcome::Uploaded(state) => {
                self.secure_round = Some(state);
                self.report.rounds_trained.push(round);
            }
            SecureOutcome::Refused(reason) => {
                let record = self.work.refuse(Some(round), &reason)?;
                decline(self.link, rref, reason, record, self.report).await?;
            }
            SecureOutcome::MovedOn => {}
        }
        Ok(())
    }

    /// Evaluates `model` (digest `model_sha256`): the exact figures stay on the node, in its report; what leaves
    /// is the node's release of them, with the ledger records appended since its last report.
    async fn evaluate(&mut self, rref: &RoundRef, model_sha256: &str, model: &[f32]) -> Result<(), ClientError> {
        // The round's key material is no longer needed; drop (and zeroize) it.
        self.secure_round = None;
        let version = rref.version;
        // A model this node cannot evaluate exactly (no held-out rows, say) still gets the node's release: under
        // DP a noisy one like every other (see `PrivateWork::release_evaluation`), so the failure does not show;
        // without DP, nothing.
        let exact = match compute(|| self.work.evaluate(model)) {
            Ok(metrics) => Some(metrics),
            Err(ClientError::Training(e)) => {
                tracing::warn!(node = %self.config.name, version = version.0, "cannot evaluate this version exactly ({e})");
                None
            }
            Err(e) => return Err(e),
        };
        let nothing = EvalMetrics { examples: 0, values: Default::default() };
        let released = match compute(|| {
            self.work.release_evaluation(version, model_sha256, model, exact.as_ref().unwrap_or(&nothing))
        }) {
            Ok(released) => released.send("the evaluation", self.config.privacy.enabled)?.values,
            Err(e @ ClientError::Policy(_)) => {
                tracing::warn!(node = %self.config.name, version = version.0, "{e}");
                Default::default()
            }
            Err(e) => return Err(e),
        };
        // The held-out count stays here too: the coordinator weights reports by the join count.
        let ledger = self.work.take_ledger_records();
        self.link.report(EvaluationReport { round: rref.clone(), metrics: released, ledger }).await?;
        if exact.is_some() {
            self.report.final_metrics = exact;
        }
        Ok(())
    }

    /// Answers a decryption request with this node's partial, if it holds key shares of that round and the
    /// request passes its checks; otherwise refuses it and waits `pause`.
    async fn decrypt(
        &mut self,
        rref: &RoundRef,
        request: &cohort_crypto::DecryptionRequest,
        pause: Duration,
    ) -> Result<(), ClientError> {
        let round = rref.round;
        let journal = &mut self.secure.journal;
        let answer = match self.secure_round.as_mut().filter(|s| s.round_id() == request.round) {
            Some(state) => state.answer(request, journal).map_err(|e| e.to_string()),
            None => Err("this node holds no key shares for the round".to_owned()),
        };
        match answer {
            Ok(partial) => {
                let header = PartialHeader { round: rref.clone(), value_count: partial.values.len() as u64 };
                match self.link.submit_partial(header, u64s_to_le(&partial.values)).await {
                    Err(e) if round_moved_on(&e) => {
                        tracing::warn!(node = %self.config.name, round = round.0, "partial decryption refused: {e}");
                        Ok(())
                    }
                    other => other,
                }
            }
            Err(reason) => {
                tracing::warn!(node = %self.config.name, round = round.0, "refusing a decryption request: {reason}");
                tokio::time::sleep(pause).await;
                Ok(())
            }
        }
    }
}

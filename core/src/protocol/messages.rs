//! The messages of the federation protocol and their wire conversions.

use super::{BodyEncoding, ProtocolError, array_of, enum_of, proto, usize_of};
use crate::binding::SignedBinding;
use crate::config::FederationPlan;
use crate::ids::{ModelVersion, NodeName, Round};
use crate::ledger::LedgerRecord;
use cohort_crypto::{DecryptionRequest, RoundAnnouncement};
use std::collections::BTreeMap;
use std::time::Duration;

/// Which federation, round and global model version a message refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundRef {
    /// The federation.
    pub federation_id: String,
    /// The round (0 before any).
    pub round: Round,
    /// The global model version.
    pub version: ModelVersion,
}

impl RoundRef {
    /// A reference to `round` and `version` of `federation_id`.
    pub fn new(federation_id: &str, round: Round, version: ModelVersion) -> Self {
        Self { federation_id: federation_id.to_owned(), round, version }
    }
}

impl From<RoundRef> for proto::RoundRef {
    fn from(r: RoundRef) -> Self {
        Self { federation_id: r.federation_id, round: r.round.0, model_version: r.version.0 }
    }
}

impl From<proto::RoundRef> for RoundRef {
    fn from(r: proto::RoundRef) -> Self {
        Self { federation_id: r.federation_id, round: Round(r.round), version: ModelVersion(r.model_version) }
    }
}

/// The round reference a message must carry.
fn round_of(r: Option<proto::RoundRef>) -> Result<RoundRef, ProtocolError> {
    r.map(RoundRef::from).ok_or(ProtocolError::Missing("round reference"))
}

/// The public keys a node announces at join, and its certificate key's signature binding them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinKeys {
    /// Ed25519 key of the node's privacy ledger (empty for a node that keeps none).
    pub ledger: Vec<u8>,
    /// X25519 key for share envelopes.
    pub encryption: Vec<u8>,
    /// Ed25519 key of share envelopes and consents.
    pub share_signing: Vec<u8>,
    /// ECDSA signature over the key binding ([`crate::binding`]).
    pub binding_signature: Vec<u8>,
}

/// What a node reports about its training data at join.
#[derive(Debug, Clone, PartialEq)]
pub struct DataReport {
    /// HMAC of the schema and rows under a node secret.
    pub fingerprint: String,
    /// Training examples: a recorded DP release under DP.
    pub examples: f64,
    /// Training examples per class: a recorded DP release under DP (empty when not reported).
    pub label_histogram: Vec<i64>,
}

/// A node's join.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinRequest {
    /// The federation it joins.
    pub federation_id: String,
    /// Its keys.
    pub keys: JoinKeys,
    /// Its data report; None on the first join, which only fetches the plan.
    pub data: Option<DataReport>,
}

impl From<JoinRequest> for proto::JoinRequest {
    fn from(j: JoinRequest) -> Self {
        Self {
            federation_id: j.federation_id,
            ledger_public_key: j.keys.ledger,
            encryption_public_key: j.keys.encryption,
            share_signing_public_key: j.keys.share_signing,
            key_binding_signature: j.keys.binding_signature,
            data: j.data.map(|d| proto::DataReport {
                data_fingerprint: d.fingerprint,
                reported_examples: d.examples,
                label_histogram: d.label_histogram,
            }),
        }
    }
}

impl TryFrom<proto::JoinRequest> for JoinRequest {
    type Error = ProtocolError;

    fn try_from(j: proto::JoinRequest) -> Result<Self, ProtocolError> {
        let data = match j.data {
            Some(d) if !d.reported_examples.is_finite() => {
                return Err(ProtocolError::invalid("reported_examples", d.reported_examples));
            }
            Some(d) => Some(DataReport {
                fingerprint: d.data_fingerprint,
                examples: d.reported_examples,
                label_histogram: d.label_histogram,
            }),
            None => None,
        };
        Ok(Self {
            federation_id: j.federation_id,
            keys: JoinKeys {
                ledger: j.ledger_public_key,
                encryption: j.encryption_public_key,
                share_signing: j.share_signing_public_key,
                binding_signature: j.key_binding_signature,
            },
            data,
        })
    }
}

/// The coordinator's answer to a join.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinResponse {
    /// The federation.
    pub federation_id: String,
    /// Its plan.
    pub plan: FederationPlan,
    /// The last completed round.
    pub current_round: Round,
}

impl From<JoinResponse> for proto::JoinResponse {
    fn from(r: JoinResponse) -> Self {
        Self { federation_id: r.federation_id, plan: Some((&r.plan).into()), current_round: r.current_round.0 }
    }
}

impl TryFrom<proto::JoinResponse> for JoinResponse {
    type Error = ProtocolError;

    fn try_from(r: proto::JoinResponse) -> Result<Self, ProtocolError> {
        let plan = r.plan.ok_or(ProtocolError::Missing("federation plan"))?.try_into()?;
        Ok(Self { federation_id: r.federation_id, plan, current_round: Round(r.current_round) })
    }
}

/// The public data of one secure round, sent with its training task.
#[derive(Debug, Clone, PartialEq)]
pub struct SecureRoundData {
    /// The announcement every participant signs.
    pub announcement: RoundAnnouncement,
    /// Every participant's certificate and key binding.
    pub bindings: Vec<SignedBinding>,
}

/// The settings of a training task.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSettings {
    /// Local epochs.
    pub local_epochs: u32,
    /// Learning rate.
    pub learning_rate: f64,
    /// Batch size for non-private training.
    pub batch_size: usize,
    /// FedProx coefficient, if any.
    pub proximal_mu: Option<f64>,
    /// The round's secure-aggregation data (None when updates travel in plaintext).
    pub secure: Option<SecureRoundData>,
}

/// What a node is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Assignment {
    /// Nothing yet.
    Wait,
    /// Train the attached model.
    Train(Box<TrainSettings>),
    /// Evaluate the attached model.
    Evaluate,
    /// The federation is over; the attached model is final.
    Finished,
    /// Answer this decryption request.
    Decrypt(DecryptionRequest),
}

impl Assignment {
    /// Whether the global model travels with this task.
    pub fn carries_model(&self) -> bool {
        matches!(self, Self::Train(_) | Self::Evaluate | Self::Finished)
    }
}

/// The header of a task stream; the model (if [`Assignment::carries_model`]) follows in chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskHeader {
    /// The round and version the task refers to.
    pub round: RoundRef,
    /// How long to wait before asking again.
    pub retry_after: Duration,
    /// Number of `f32` parameters attached.
    pub parameter_count: u64,
    /// SHA-256 (hex) of the attached model bytes; empty when none is attached.
    pub model_sha256: String,
    /// The task.
    pub assignment: Assignment,
}

impl From<TaskHeader> for proto::TaskHeader {
    fn from(h: TaskHeader) -> Self {
        use proto::task_header::Task;
        let task = match h.assignment {
            Assignment::Wait => Task::Wait(proto::WaitTask {}),
            Assignment::Train(s) => Task::Train(proto::TrainTask {
                local_epochs: s.local_epochs,
                learning_rate: s.learning_rate,
                batch_size: s.batch_size as u64,
                proximal_mu: s.proximal_mu,
                secure: s.secure.map(|d| proto::SecureRound {
                    announcement: Some((&d.announcement).into()),
                    bindings: d.bindings.iter().map(Into::into).collect(),
                }),
            }),
            Assignment::Evaluate => Task::Evaluate(proto::EvaluateTask {}),
            Assignment::Finished => Task::Finished(proto::FinishedTask {}),
            Assignment::Decrypt(r) => Task::Decrypt(proto::DecryptTask { request: Some((&r).into()) }),
        };
        Self {
            round: Some(h.round.into()),
            retry_after_ms: u64::try_from(h.retry_after.as_millis()).unwrap_or(u64::MAX),
            parameter_count: h.parameter_count,
            // Our own digests are always hex; an empty one means no model.
            model_sha256: hex::decode(&h.model_sha256).unwrap_or_default(),
            task: Some(task),
        }
    }
}

impl TryFrom<proto::TaskHeader> for TaskHeader {
    type Error = ProtocolError;

    fn try_from(h: proto::TaskHeader) -> Result<Self, ProtocolError> {
        use proto::task_header::Task;
        let assignment = match h.task.ok_or(ProtocolError::Missing("task"))? {
            Task::Wait(_) => Assignment::Wait,
            Task::Train(t) => {
                let secure = match t.secure {
                    Some(s) => Some(SecureRoundData {
                        announcement: s.announcement.ok_or(ProtocolError::Missing("round announcement"))?.try_into()?,
                        bindings: s.bindings.into_iter().map(TryInto::try_into).collect::<Result<_, _>>()?,
                    }),
                    None => None,
                };
                Assignment::Train(Box::new(TrainSettings {
                    local_epochs: t.local_epochs,
                    learning_rate: t.learning_rate,
                    batch_size: usize_of("batch_size", t.batch_size)?,
                    proximal_mu: t.proximal_mu,
                    secure,
                }))
            }
            Task::Evaluate(_) => Assignment::Evaluate,
            Task::Finished(_) => Assignment::Finished,
            Task::Decrypt(d) => {
                Assignment::Decrypt(d.request.ok_or(ProtocolError::Missing("decryption request"))?.try_into()?)
            }
        };
        let model_sha256 = match h.model_sha256.len() {
            0 => String::new(),
            _ => hex::encode(array_of::<32>("model_sha256", &h.model_sha256)?),
        };
        Ok(Self {
            round: round_of(h.round)?,
            retry_after: Duration::from_millis(h.retry_after_ms),
            parameter_count: h.parameter_count,
            model_sha256,
            assignment,
        })
    }
}

/// The header of an update upload; the body of `value_count` values follows in chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateHeader {
    /// The round trained.
    pub round: RoundRef,
    /// Number of values in the body.
    pub value_count: u64,
    /// Their encoding.
    pub encoding: BodyEncoding,
    /// Mean local training loss, sent only by a node without DP.
    pub train_loss: Option<f64>,
}

impl From<UpdateHeader> for proto::UpdateHeader {
    fn from(h: UpdateHeader) -> Self {
        Self {
            round: Some(h.round.into()),
            value_count: h.value_count,
            encoding: proto::BodyEncoding::from(h.encoding).into(),
            train_loss: h.train_loss,
        }
    }
}

impl TryFrom<proto::UpdateHeader> for UpdateHeader {
    type Error = ProtocolError;

    fn try_from(h: proto::UpdateHeader) -> Result<Self, ProtocolError> {
        let encoding: proto::BodyEncoding = enum_of("encoding", h.encoding)?;
        Ok(Self {
            round: round_of(h.round)?,
            value_count: h.value_count,
            encoding: encoding.try_into()?,
            train_loss: h.train_loss.filter(|l| l.is_finite()),
        })
    }
}

/// A declined training round.
#[derive(Debug, Clone, PartialEq)]
pub struct Decline {
    /// The round.
    pub round: RoundRef,
    /// Why.
    pub reason: String,
    /// The signed ledger record of the decline, when the node keeps a ledger.
    pub record: Option<LedgerRecord>,
}

impl From<Decline> for proto::DeclineRequest {
    fn from(d: Decline) -> Self {
        Self { round: Some(d.round.into()), reason: d.reason, ledger_record: d.record.as_ref().map(Into::into) }
    }
}

impl TryFrom<proto::DeclineRequest> for Decline {
    type Error = ProtocolError;

    fn try_from(d: proto::DeclineRequest) -> Result<Self, ProtocolError> {
        Ok(Self {
            round: round_of(d.round)?,
            reason: d.reason,
            record: d.ledger_record.map(TryInto::try_into).transpose()?,
        })
    }
}

/// A node's evaluation of a global model.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationReport {
    /// The round whose model was evaluated.
    pub round: RoundRef,
    /// Metric values by name (under DP, each derived from a recorded release).
    pub metrics: BTreeMap<String, f64>,
    /// Ledger records appended since the node's last report.
    pub ledger: Vec<LedgerRecord>,
}

impl From<EvaluationReport> for proto::EvaluationReport {
    fn from(r: EvaluationReport) -> Self {
        Self {
            round: Some(r.round.into()),
            metrics: r.metrics.into_iter().collect(),
            ledger: r.ledger.iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<proto::EvaluationReport> for EvaluationReport {
    type Error = ProtocolError;

    fn try_from(r: proto::EvaluationReport) -> Result<Self, ProtocolError> {
        Ok(Self {
            round: round_of(r.round)?,
            metrics: r.metrics.into_iter().collect(),
            ledger: r.ledger.into_iter().map(TryInto::try_into).collect::<Result<_, _>>()?,
        })
    }
}

/// A node's sealed key shares and its consent to the round announcement.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareSubmission {
    /// The round.
    pub round: RoundRef,
    /// One sealed envelope per recipient.
    pub envelopes: Vec<(NodeName, Vec<u8>)>,
    /// Ed25519 signature over the announcement hash.
    pub consent: Vec<u8>,
}

impl From<ShareSubmission> for proto::ShareSubmission {
    fn from(s: ShareSubmission) -> Self {
        Self {
            round: Some(s.round.into()),
            envelopes: s.envelopes.into_iter().map(|(r, sealed)| proto::Envelope { recipient: r.0, sealed }).collect(),
            consent_signature: s.consent,
        }
    }
}

impl TryFrom<proto::ShareSubmission> for ShareSubmission {
    type Error = ProtocolError;

    fn try_from(s: proto::ShareSubmission) -> Result<Self, ProtocolError> {
        Ok(Self {
            round: round_of(s.round)?,
            envelopes: s.envelopes.into_iter().map(|e| (NodeName(e.recipient), e.sealed)).collect(),
            consent: s.consent_signature,
        })
    }
}

/// The envelopes addressed to one node, once share distribution has closed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShareBundle {
    /// False while distribution is open: ask again.
    pub ready: bool,
    /// Sealed envelopes with their senders.
    pub envelopes: Vec<(NodeName, Vec<u8>)>,
    /// The round's key holders.
    pub key_holders: Vec<NodeName>,
}

impl ShareBundle {
    /// The wire form, for `round`.
    pub fn into_proto(self, round: RoundRef) -> proto::ShareBundle {
        proto::ShareBundle {
            round: Some(round.into()),
            envelopes: self
                .envelopes
                .into_iter()
                .map(|(sender, sealed)| proto::SenderEnvelope { sender: sender.0, sealed })
                .collect(),
            key_holders: self.key_holders.into_iter().map(|n| n.0).collect(),
            ready: self.ready,
        }
    }
}

impl From<proto::ShareBundle> for ShareBundle {
    fn from(b: proto::ShareBundle) -> Self {
        Self {
            ready: b.ready,
            envelopes: b.envelopes.into_iter().map(|e| (NodeName(e.sender), e.sealed)).collect(),
            key_holders: b.key_holders.into_iter().map(NodeName).collect(),
        }
    }
}

/// The header of a partial decryption; `value_count` little-endian `u64`s follow in chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialHeader {
    /// The round.
    pub round: RoundRef,
    /// Number of values.
    pub value_count: u64,
}

impl From<PartialHeader> for proto::PartialHeader {
    fn from(h: PartialHeader) -> Self {
        Self { round: Some(h.round.into()), value_count: h.value_count }
    }
}

impl TryFrom<proto::PartialHeader> for PartialHeader {
    type Error = ProtocolError;

    fn try_from(h: proto::PartialHeader) -> Result<Self, ProtocolError> {
        Ok(Self { round: round_of(h.round)?, value_count: h.value_count })
    }
}

//! Signed ledger records on the wire, field for field, so that every signature still verifies after a round
//! trip.

use super::{ProtocolError, enum_of, proto};
use crate::ledger::{LedgerRecord, Mechanism, RecordBody};

impl From<Mechanism> for proto::Mechanism {
    fn from(m: Mechanism) -> Self {
        match m {
            Mechanism::DpSgd => Self::DpSgd,
            Mechanism::DpSgdTuning => Self::DpSgdTuning,
            Mechanism::OpenDpCount => Self::OpenDpCount,
            Mechanism::OpenDpHistogram => Self::OpenDpHistogram,
            Mechanism::OpenDpFeatureStats => Self::OpenDpFeatureStats,
            Mechanism::OpenDpEvaluation => Self::OpenDpEvaluation,
            Mechanism::Decline => Self::Decline,
        }
    }
}

impl From<&LedgerRecord> for proto::LedgerRecord {
    fn from(r: &LedgerRecord) -> Self {
        let b = &r.body;
        Self {
            seq: b.seq,
            prev_hash: b.prev_hash.clone(),
            node: b.node.clone(),
            dataset_fingerprint: b.dataset_fingerprint.clone(),
            mechanism: proto::Mechanism::from(b.mechanism).into(),
            round: b.round,
            sample_rate: b.sample_rate,
            noise_multiplier: b.noise_multiplier,
            clip_norm: b.clip_norm,
            steps: b.steps,
            delta: b.delta,
            epsilon_spent: b.epsilon_spent,
            relation: b.relation.clone(),
            accountant: b.accountant.clone(),
            accountant_version: b.accountant_version.clone(),
            cumulative_epsilon: b.cumulative_epsilon,
            epsilon_budget: b.epsilon_budget,
            note: b.note.clone(),
            timestamp_ms: b.timestamp_ms,
            hash: r.hash.clone(),
            signer: r.signer.clone(),
            signature: r.signature.clone(),
        }
    }
}

impl TryFrom<proto::LedgerRecord> for LedgerRecord {
    type Error = ProtocolError;

    /// Decodes a record as sent. Its hash, signature and chain are checked by the receiver's ledger code, not
    /// here.
    fn try_from(r: proto::LedgerRecord) -> Result<Self, ProtocolError> {
        let mechanism = match enum_of::<proto::Mechanism>("mechanism", r.mechanism)? {
            proto::Mechanism::DpSgd => Mechanism::DpSgd,
            proto::Mechanism::DpSgdTuning => Mechanism::DpSgdTuning,
            proto::Mechanism::OpenDpCount => Mechanism::OpenDpCount,
            proto::Mechanism::OpenDpHistogram => Mechanism::OpenDpHistogram,
            proto::Mechanism::OpenDpFeatureStats => Mechanism::OpenDpFeatureStats,
            proto::Mechanism::OpenDpEvaluation => Mechanism::OpenDpEvaluation,
            proto::Mechanism::Decline => Mechanism::Decline,
            proto::Mechanism::Unspecified => return Err(ProtocolError::Missing("ledger mechanism")),
        };
        Ok(Self {
            body: RecordBody {
                seq: r.seq,
                prev_hash: r.prev_hash,
                node: r.node,
                dataset_fingerprint: r.dataset_fingerprint,
                mechanism,
                round: r.round,
                sample_rate: r.sample_rate,
                noise_multiplier: r.noise_multiplier,
                clip_norm: r.clip_norm,
                steps: r.steps,
                delta: r.delta,
                epsilon_spent: r.epsilon_spent,
                relation: r.relation,
                accountant: r.accountant,
                accountant_version: r.accountant_version,
                cumulative_epsilon: r.cumulative_epsilon,
                epsilon_budget: r.epsilon_budget,
                note: r.note,
                timestamp_ms: r.timestamp_ms,
            },
            hash: r.hash,
            signer: r.signer,
            signature: r.signature,
        })
    }
}

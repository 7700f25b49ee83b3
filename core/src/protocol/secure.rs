//! Secure-aggregation values on the wire: key bindings, round announcements and decryption requests, field for
//! field, so that every hash and signature over them still verifies after a round trip.

use super::{ProtocolError, array_of, proto, usize_of};
use crate::binding::{BoundKeys, SignedBinding};
use cohort_crypto::{
    AnnouncedParticipant, AnnouncementHash, Consent, DecryptionRequest, MaskSeed, NodePublicKeys, ParticipantId,
    RoundAnnouncement, RoundId, SecAggParams,
};

impl From<&SignedBinding> for proto::KeyBinding {
    fn from(b: &SignedBinding) -> Self {
        Self {
            node: b.node.clone(),
            certificate_der: b.certificate_der.clone(),
            x25519: b.keys.x25519.to_vec(),
            share_ed25519: b.keys.share_ed25519.to_vec(),
            ledger_ed25519: b.keys.ledger_ed25519.map(|k| k.to_vec()),
            signature: b.signature.clone(),
        }
    }
}

impl TryFrom<proto::KeyBinding> for SignedBinding {
    type Error = ProtocolError;

    fn try_from(b: proto::KeyBinding) -> Result<Self, ProtocolError> {
        Ok(Self {
            node: b.node,
            certificate_der: b.certificate_der,
            keys: BoundKeys {
                x25519: array_of("x25519", &b.x25519)?,
                share_ed25519: array_of("share_ed25519", &b.share_ed25519)?,
                ledger_ed25519: b.ledger_ed25519.map(|k| array_of("ledger_ed25519", &k)).transpose()?,
            },
            signature: b.signature,
        })
    }
}

impl From<&SecAggParams> for proto::SecAggParams {
    fn from(p: &SecAggParams) -> Self {
        Self {
            polynomial_size: p.polynomial_size as u64,
            moduli: p.moduli.clone(),
            fraction_bits: p.fraction_bits,
            clip: p.clip,
            max_weight: p.max_weight,
            max_clients: p.max_clients,
            error_eta: p.error_eta,
            flooding_bits: p.flooding_bits,
            max_coordinates: p.max_coordinates as u64,
            slots: p.slots,
            slot_bits: p.slot_bits,
            insecure_toy: p.insecure_toy,
        }
    }
}

impl TryFrom<proto::SecAggParams> for SecAggParams {
    type Error = ProtocolError;

    fn try_from(p: proto::SecAggParams) -> Result<Self, ProtocolError> {
        Ok(Self {
            polynomial_size: usize_of("polynomial_size", p.polynomial_size)?,
            moduli: p.moduli,
            fraction_bits: p.fraction_bits,
            clip: p.clip,
            max_weight: p.max_weight,
            max_clients: p.max_clients,
            error_eta: p.error_eta,
            flooding_bits: p.flooding_bits,
            max_coordinates: usize_of("max_coordinates", p.max_coordinates)?,
            slots: p.slots,
            slot_bits: p.slot_bits,
            insecure_toy: p.insecure_toy,
        })
    }
}

fn participant_of(field: &'static str, id: u32) -> Result<ParticipantId, ProtocolError> {
    ParticipantId::new(id).ok_or_else(|| ProtocolError::invalid(field, "participant id 0"))
}

impl From<&RoundAnnouncement> for proto::RoundAnnouncement {
    fn from(a: &RoundAnnouncement) -> Self {
        Self {
            federation: a.federation.clone(),
            round_id: a.round.0,
            nonce: a.nonce.to_vec(),
            model_sha256: a.model_sha256.to_vec(),
            mask_seed: a.seed.0.to_vec(),
            params: Some((&a.params).into()),
            threshold: a.threshold as u64,
            min_participants: a.min_participants as u64,
            max_colluders: a.max_colluders as u64,
            reference_examples: a.reference_examples,
            weight_cap: a.weight_cap,
            model_len: a.model_len as u64,
            participants: a
                .participants
                .iter()
                .map(|p| proto::AnnouncedParticipant {
                    name: p.name.clone(),
                    id: p.id.0.get(),
                    x25519: p.keys.x25519.to_vec(),
                    ed25519: p.keys.ed25519.to_vec(),
                })
                .collect(),
        }
    }
}

impl TryFrom<proto::RoundAnnouncement> for RoundAnnouncement {
    type Error = ProtocolError;

    fn try_from(a: proto::RoundAnnouncement) -> Result<Self, ProtocolError> {
        let participants = a
            .participants
            .into_iter()
            .map(|p| {
                Ok(AnnouncedParticipant {
                    name: p.name,
                    id: participant_of("participant id", p.id)?,
                    keys: NodePublicKeys {
                        x25519: array_of("participant x25519", &p.x25519)?,
                        ed25519: array_of("participant ed25519", &p.ed25519)?,
                    },
                })
            })
            .collect::<Result<_, ProtocolError>>()?;
        Ok(Self {
            federation: a.federation,
            round: RoundId(a.round_id),
            nonce: array_of("nonce", &a.nonce)?,
            model_sha256: array_of("model_sha256", &a.model_sha256)?,
            seed: MaskSeed(array_of("mask_seed", &a.mask_seed)?),
            params: a.params.ok_or(ProtocolError::Missing("secure-aggregation parameters"))?.try_into()?,
            threshold: usize_of("threshold", a.threshold)?,
            min_participants: usize_of("min_participants", a.min_participants)?,
            max_colluders: usize_of("max_colluders", a.max_colluders)?,
            reference_examples: a.reference_examples,
            weight_cap: a.weight_cap,
            model_len: usize_of("model_len", a.model_len)?,
            participants,
        })
    }
}

impl From<&DecryptionRequest> for proto::DecryptionRequest {
    fn from(r: &DecryptionRequest) -> Self {
        Self {
            round_id: r.round.0,
            announcement_hash: r.announcement.0.to_vec(),
            participants: r.participants.iter().map(|p| p.0.get()).collect(),
            consents: r
                .consents
                .iter()
                .map(|c| proto::Consent { participant: c.participant.0.get(), signature: c.signature.to_vec() })
                .collect(),
            responders: r.responders.iter().map(|p| p.0.get()).collect(),
            len: r.len as u64,
        }
    }
}

impl TryFrom<proto::DecryptionRequest> for DecryptionRequest {
    type Error = ProtocolError;

    fn try_from(r: proto::DecryptionRequest) -> Result<Self, ProtocolError> {
        let ids = |field, v: Vec<u32>| v.into_iter().map(|id| participant_of(field, id)).collect::<Result<_, _>>();
        Ok(Self {
            round: RoundId(r.round_id),
            announcement: AnnouncementHash(array_of("announcement_hash", &r.announcement_hash)?),
            participants: ids("participants", r.participants)?,
            consents: r
                .consents
                .into_iter()
                .map(|c| {
                    Ok(Consent {
                        participant: participant_of("consent participant", c.participant)?,
                        signature: array_of("consent signature", &c.signature)?,
                    })
                })
                .collect::<Result<_, ProtocolError>>()?,
            responders: ids("responders", r.responders)?,
            len: usize_of("len", r.len)?,
        })
    }
}

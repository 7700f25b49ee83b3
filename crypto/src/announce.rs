//! Plain data the protocol exchanges around the math: the coordinator's public announcement of a
//! secure round, and a compact byte encoding of sealed share envelopes for relaying.
//!
//! No I/O and no protobuf: the coordinator serializes a [`RoundAnnouncement`] (serde) into its
//! task settings, and both sides use [`encode_sealed`] / [`decode_sealed`] for the opaque blobs it
//! relays. The envelope's binding context travels implicitly: the recipient rebuilds it from the
//! announcement, and the envelope's signature and AEAD tag authenticate it (see [`crate::envelope`]).

use crate::envelope::{EnvelopeError, SealedShare, ShareContext};
use crate::ids::{ParticipantId, RoundId};
use crate::keys::NodePublicKeys;
use crate::mask::MaskSeed;
use crate::params::SecAggParams;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use thiserror::Error;

/// An announcement that a participant must refuse.
#[derive(Debug, Clone, Error, PartialEq)]
#[non_exhaustive]
pub enum AnnouncementError {
    /// The threshold is not a strict majority of the participants, or exceeds them.
    #[error("threshold {threshold} is not in ({half}, {n}] for {n} participants")]
    BadThreshold {
        /// t.
        threshold: usize,
        /// n / 2 (t must exceed it).
        half: usize,
        /// Number of participants.
        n: usize,
    },
    /// `min_participants` is below the floor of 2 (a set of one reveals an individual update).
    #[error("min_participants {0} is below 2")]
    MinParticipantsTooSmall(usize),
    /// Two participants share a name or an id.
    #[error("participant {0} is listed twice")]
    Duplicate(String),
    /// More participants than the parameters' headroom allows.
    #[error("{n} participants exceed max_clients {max}")]
    TooMany {
        /// Participants.
        n: usize,
        /// max_clients.
        max: u32,
    },
    /// The reference example count is not a positive finite number.
    #[error("reference example count {0} is not positive")]
    BadReference(f64),
}

/// One participant of a secure round: its name (certificate common name), its round id (also its
/// Shamir x-coordinate) and its long-term public keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnouncedParticipant {
    /// Node name.
    pub name: String,
    /// Round participant id.
    pub id: ParticipantId,
    /// X25519 + Ed25519 public keys.
    pub keys: NodePublicKeys,
}

/// Everything public about one secure round, announced by the coordinator with the training task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundAnnouncement {
    /// Federation id (bound into every envelope).
    pub federation: String,
    /// Round id (bound into envelopes, masks and decryption).
    pub round: RoundId,
    /// The round's public mask seed, drawn by the coordinator from the OS CSPRNG.
    pub seed: MaskSeed,
    /// Ring and encoding parameters.
    pub params: SecAggParams,
    /// Decryption threshold t (> n/2).
    pub threshold: usize,
    /// Smallest participant set a key holder agrees to decrypt.
    pub min_participants: usize,
    /// Public reference example count `n_ref`: a client with `n_i` examples uses weight
    /// `min(n_i / n_ref, max_weight)`.
    pub reference_examples: f64,
    /// The selected participants, sorted by id.
    pub participants: Vec<AnnouncedParticipant>,
}

impl RoundAnnouncement {
    /// The participant named `name`.
    pub fn participant(&self, name: &str) -> Option<&AnnouncedParticipant> {
        self.participants.iter().find(|p| p.name == name)
    }

    /// The participant with id `id`.
    pub fn by_id(&self, id: ParticipantId) -> Option<&AnnouncedParticipant> {
        self.participants.iter().find(|p| p.id == id)
    }

    /// The FedAvg weight for `examples` local examples: `min(examples / n_ref, max_weight)`.
    pub fn weight_for(&self, examples: u64) -> f64 {
        (examples as f64 / self.reference_examples).min(self.params.max_weight)
    }

    /// Checks the policy a participant relies on: `n/2 < t ≤ n`, `min_participants ≥ 2`, distinct
    /// names and ids, `n ≤ max_clients`, a positive reference count. (Parameter security is
    /// checked separately by [`SecAggParams::build`].)
    ///
    /// # Errors
    /// [`AnnouncementError`] naming the first violated rule.
    pub fn validate(&self) -> Result<(), AnnouncementError> {
        let n = self.participants.len();
        if self.threshold <= n / 2 || self.threshold > n {
            return Err(AnnouncementError::BadThreshold {
                threshold: self.threshold,
                half: n / 2,
                n,
            });
        }
        if self.min_participants < 2 {
            return Err(AnnouncementError::MinParticipantsTooSmall(
                self.min_participants,
            ));
        }
        if n > self.params.max_clients as usize {
            return Err(AnnouncementError::TooMany {
                n,
                max: self.params.max_clients,
            });
        }
        if !(self.reference_examples > 0.0 && self.reference_examples.is_finite()) {
            return Err(AnnouncementError::BadReference(self.reference_examples));
        }
        let (mut names, mut ids) = (BTreeSet::new(), BTreeSet::new());
        for p in &self.participants {
            if !names.insert(p.name.as_str()) || !ids.insert(p.id) {
                return Err(AnnouncementError::Duplicate(p.name.clone()));
            }
        }
        Ok(())
    }

    /// The envelope binding context for a share from `sender` to `recipient` in this round.
    pub fn share_context(&self, sender: ParticipantId, recipient: ParticipantId) -> ShareContext {
        ShareContext {
            federation: self.federation.clone(),
            round: self.round,
            sender,
            recipient,
        }
    }
}

/// Length of the fixed prefix of [`encode_sealed`]: ephemeral key (32) and signature (64).
const SEALED_PREFIX: usize = 32 + 64;

/// Encodes an envelope for relaying: `ephemeral_public ‖ signature ‖ ciphertext`. The context is
/// not included; the recipient rebuilds it (see [`decode_sealed`]).
pub fn encode_sealed(sealed: &SealedShare) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEALED_PREFIX + sealed.ciphertext.len());
    out.extend_from_slice(&sealed.ephemeral_public);
    out.extend_from_slice(&sealed.signature);
    out.extend_from_slice(&sealed.ciphertext);
    out
}

/// Decodes [`encode_sealed`] bytes under the `context` the recipient expects. A relay that swaps
/// blobs or contexts is caught when the envelope is opened (signature and AEAD over the context).
///
/// # Errors
/// [`EnvelopeError::Malformed`] for bytes too short to hold the prefix and a tag.
///
/// # Example
/// ```
/// use cohort_crypto::*;
/// use cohort_crypto::announce::{decode_sealed, encode_sealed};
/// let (alice, bob) = (NodeIdentity::generate(), NodeIdentity::generate());
/// let ctx = ShareContext { federation: "fed".into(), round: RoundId(3),
///     sender: ParticipantId::new(1).unwrap(), recipient: ParticipantId::new(2).unwrap() };
/// let share = KeyShare::from_values(vec![1, 2, 3], 257).unwrap();
/// let env = seal_share(&alice, &bob.public_keys(), &ctx, &share).unwrap();
/// let back = decode_sealed(ctx.clone(), &encode_sealed(&env)).unwrap();
/// assert_eq!(back, env);
/// ```
pub fn decode_sealed(context: ShareContext, bytes: &[u8]) -> Result<SealedShare, EnvelopeError> {
    if bytes.len() < SEALED_PREFIX + 16 {
        return Err(EnvelopeError::Malformed("envelope too short"));
    }
    let mut ephemeral_public = [0u8; 32];
    ephemeral_public.copy_from_slice(&bytes[..32]);
    Ok(SealedShare {
        context,
        ephemeral_public,
        signature: bytes[32..SEALED_PREFIX].to_vec(),
        ciphertext: bytes[SEALED_PREFIX..].to_vec(),
    })
}

/// Largest encoded envelope for ring degree `n`: prefix, an 8-byte-per-coefficient share with its
/// header allowance, and the AEAD tag. Relays use it to bound what they store.
pub fn max_sealed_len(n: usize) -> usize {
    SEALED_PREFIX + 8 * n + 64 + 16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::NodeIdentity;

    fn announcement(n: u32, t: usize) -> RoundAnnouncement {
        RoundAnnouncement {
            federation: "f".into(),
            round: RoundId(1),
            seed: MaskSeed([1; 32]),
            params: SecAggParams::default(),
            threshold: t,
            min_participants: 3,
            reference_examples: 10.0,
            participants: (1..=n)
                .map(|i| AnnouncedParticipant {
                    name: format!("n{i}"),
                    id: ParticipantId::new(i).unwrap(),
                    keys: NodeIdentity::generate().public_keys(),
                })
                .collect(),
        }
    }

    #[test]
    fn policy_is_checked() {
        assert!(announcement(5, 3).validate().is_ok());
        assert!(matches!(
            announcement(5, 2).validate(),
            Err(AnnouncementError::BadThreshold { .. })
        ));
        assert!(matches!(
            announcement(4, 5).validate(),
            Err(AnnouncementError::BadThreshold { .. })
        ));
        let mut a = announcement(5, 3);
        a.min_participants = 1;
        assert_eq!(
            a.validate(),
            Err(AnnouncementError::MinParticipantsTooSmall(1))
        );
        let mut a = announcement(5, 3);
        a.participants[1].name = "n1".into();
        assert!(matches!(a.validate(), Err(AnnouncementError::Duplicate(_))));
        let a = announcement(5, 3);
        assert_eq!(a.weight_for(20), 2.0);
        assert_eq!(a.weight_for(10_000), 16.0);
        assert!(
            decode_sealed(
                a.share_context(a.participants[0].id, a.participants[1].id),
                &[0; 50]
            )
            .is_err()
        );
    }
}

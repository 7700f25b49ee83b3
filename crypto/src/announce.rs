//! Plain data the protocol exchanges around the math: the coordinator's public announcement of a
//! secure round, its canonical hash, the participants' signed consents to it, the collusion
//! policy, and a compact byte encoding of sealed share envelopes for relaying.
//!
//! No I/O and no protobuf: the protocol maps a [`RoundAnnouncement`] to its own wire format, and
//! both sides use [`encode_sealed`] / [`decode_sealed`] for the opaque blobs the coordinator
//! relays. The envelope's binding context travels implicitly: the recipient rebuilds it from the
//! announcement, and the envelope's signature and AEAD tag authenticate it (see
//! [`crate::envelope`]).
//!
//! # Binding the protocol to one announcement
//! The coordinator relays everything and may be malicious (design note, threat model). To stop it
//! from showing different clients different participant sets, models or parameters (Pasquini et
//! al., "Eluding Secure Aggregation in Federated Learning via Model Inconsistency", CCS 2022),
//! every client verifies the announcement ([`RoundAnnouncement::validate`]), computes its
//! [`AnnouncementHash`] (SHA-256 of a canonical encoding of **every** field) and signs a
//! [`Consent`] over it. Envelopes carry the hash in their associated data, and a key holder only
//! answers a decryption request naming its own announcement hash and carrying a valid consent of
//! every member of the decryption set (as in the consistency round of SecAgg+, Bell et al.,
//! CCS 2020).
//!
//! # Collusion policy
//! With `n` participants of which up to `c` collude with the coordinator (the design note's
//! `max_colluders`), a decryption needs the partials of a responder set `T` with `|T| ≥ t`. Honest
//! holders answer at most one request per round (durably, see [`crate::journal`]); colluders
//! answer anything. Two different decryptions in one round need two responder sets `T_1, T_2`
//! whose intersection consists only of colluders, so `|T_1 ∩ T_2| ≥ 2t − n` must be `≤ c`, i.e.
//! `2t − c ≤ n`. Requiring `2t > n + c` (that is, `t > (n + c)/2`) makes every two responder
//! sets share an honest holder, so **no split** is possible: the coordinator obtains at most one
//! sum per round. Requiring `min_participants ≥ c + 2` makes every decrypted sum contain at least
//! two honest updates (at most `c` members of the set are colluders, whose updates the coordinator
//! knows), so it never isolates a single honest update. [`collusion_policy`] derives the smallest
//! such `t` and `min_participants`.

use crate::canon::Canon;
use crate::envelope::{EnvelopeError, SealedShare, ShareContext};
use crate::ids::{ParticipantId, RoundId};
use crate::keys::{NodeIdentity, NodePublicKeys};
use crate::mask::MaskSeed;
use crate::params::{ParamsError, SecAggParams};
use ed25519_dalek::Signature;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use thiserror::Error;

/// An announcement, policy or consent that a participant must refuse.
#[derive(Debug, Clone, Error, PartialEq)]
#[non_exhaustive]
pub enum AnnouncementError {
    /// The threshold does not satisfy `(n + c)/2 < t ≤ n` (exactly: `2t > n + c` and `t ≤ n`).
    #[error(
        "threshold {threshold} must satisfy 2t > n + c and t <= n for n = {n} participants and c = {max_colluders} colluders"
    )]
    BadThreshold {
        /// t.
        threshold: usize,
        /// Number of participants n.
        n: usize,
        /// max_colluders c.
        max_colluders: usize,
    },
    /// `min_participants` is below `c + 2`: a decrypted sum could hold fewer than two honest
    /// updates.
    #[error("min_participants {min_participants} is below max_colluders + 2 = {required}")]
    MinParticipantsTooSmall {
        /// The announced min_participants.
        min_participants: usize,
        /// `c + 2`.
        required: usize,
    },
    /// `min_participants` exceeds the number of participants: no set could ever be decrypted.
    #[error("min_participants {min_participants} exceeds the {n} participants")]
    MinParticipantsTooLarge {
        /// The announced min_participants.
        min_participants: usize,
        /// Number of participants.
        n: usize,
    },
    /// No threshold and minimum set size can meet the collusion bound for these `n` and `c`.
    #[error("no secure policy for n = {n} participants with c = {max_colluders} colluders: {reason}")]
    ImpossiblePolicy {
        /// Number of participants.
        n: usize,
        /// max_colluders.
        max_colluders: usize,
        /// What cannot be met.
        reason: &'static str,
    },
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
    /// The weight cap is not a positive finite number.
    #[error("weight cap {0} is not positive")]
    BadWeightCap(f64),
    /// The model length is zero or, with the weight coordinate, exceeds `max_coordinates`.
    #[error("model length {model_len} must be >= 1 with model_len + 1 <= max_coordinates = {max_coordinates}")]
    BadModelLength {
        /// Announced model length.
        model_len: usize,
        /// `params.max_coordinates`.
        max_coordinates: usize,
    },
    /// The announced parameters are invalid.
    #[error(transparent)]
    Params(#[from] ParamsError),
    /// A consent names a participant that is not in the announcement.
    #[error("consent from {0}, who is not an announced participant")]
    UnknownParticipant(ParticipantId),
    /// A consent's signature does not verify under the announced participant's Ed25519 key, or
    /// that key is not a valid point.
    #[error("consent of {0} has a bad signature")]
    BadConsent(ParticipantId),
}

/// SHA-256 of the canonical encoding of a [`RoundAnnouncement`] ([`RoundAnnouncement::hash`]).
/// Everything of a round (envelopes, consents, decryption requests, partials) is bound to it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AnnouncementHash(pub [u8; 32]);

impl AnnouncementHash {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for AnnouncementHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AnnouncementHash({})", self.to_hex())
    }
}

impl std::fmt::Display for AnnouncementHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A participant's signed consent to one announcement: Ed25519 (RFC 8032) with its long-term
/// signing key over `"cohort/secagg/consent/v1" ‖ participant id (u32 LE) ‖ announcement hash`.
/// A key holder answers a decryption request only if every member of the decryption set consented
/// to the holder's own announcement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// The consenting participant.
    pub participant: ParticipantId,
    /// The Ed25519 signature (serialized as a sequence of 64 bytes).
    #[serde(with = "sig_serde")]
    pub signature: [u8; 64],
}

mod sig_serde {
    use super::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(sig.iter())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v = Vec::<u8>::deserialize(d)?;
        v.as_slice().try_into().map_err(|_| serde::de::Error::invalid_length(v.len(), &"64 signature bytes"))
    }
}

fn consent_message(participant: ParticipantId, hash: &AnnouncementHash) -> Vec<u8> {
    let mut m = Vec::with_capacity(24 + 4 + 32);
    m.extend_from_slice(b"cohort/secagg/consent/v1");
    m.extend_from_slice(&participant.get().to_le_bytes());
    m.extend_from_slice(&hash.0);
    m
}

/// Signs `participant`'s consent to the announcement with hash `hash`, with the node's Ed25519
/// share-signing key. The caller must have validated the announcement and checked that the model
/// it trains has the announced hash.
pub fn sign_consent(identity: &NodeIdentity, participant: ParticipantId, hash: &AnnouncementHash) -> Consent {
    Consent { participant, signature: identity.sign(&consent_message(participant, hash)) }
}

/// The smallest secure threshold and minimum decryption set for `n` participants of which up to
/// `c` collude with the coordinator: `t = ⌊(n + c)/2⌋ + 1` (the least `t` with `2t > n + c`, so
/// any two responder sets of size `t` share an honest holder, see the module docs) and
/// `min_participants = c + 2` (every decrypted sum holds at least two honest updates).
///
/// # Errors
/// [`AnnouncementError::ImpossiblePolicy`] if `t > n` (too many colluders for a strict
/// honest-majority intersection) or `c + 2 > n` (no set can hold two honest updates).
///
/// # Example
/// ```
/// use cohort_crypto::announce::collusion_policy;
/// assert_eq!(collusion_policy(5, 1).unwrap(), (4, 3));
/// assert_eq!(collusion_policy(10, 1).unwrap(), (6, 3));
/// assert!(collusion_policy(3, 2).is_err());
/// ```
pub fn collusion_policy(n: usize, c: usize) -> Result<(usize, usize), AnnouncementError> {
    let t = n.checked_add(c).map(|s| s / 2 + 1).ok_or(AnnouncementError::ImpossiblePolicy {
        n,
        max_colluders: c,
        reason: "n + c overflows",
    })?;
    if t > n {
        return Err(AnnouncementError::ImpossiblePolicy {
            n,
            max_colluders: c,
            reason: "the threshold floor((n + c)/2) + 1 exceeds n",
        });
    }
    let min = c + 2;
    if min > n {
        return Err(AnnouncementError::ImpossiblePolicy {
            n,
            max_colluders: c,
            reason: "a decryption set of c + 2 members (two honest) needs more participants",
        });
    }
    Ok((t, min))
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
/// Clients verify it ([`RoundAnnouncement::validate`]) and sign its [`hash`](Self::hash).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundAnnouncement {
    /// Federation id (bound into every envelope).
    pub federation: String,
    /// Round id (bound into envelopes, masks and decryption). The coordinator promises never to
    /// reuse it; clients enforce this through their durable journal.
    pub round: RoundId,
    /// A fresh random nonce per announcement, so two announcements never share a hash.
    pub nonce: [u8; 32],
    /// SHA-256 of the global model bytes this round trains.
    pub model_sha256: [u8; 32],
    /// The round's public mask seed, drawn by the coordinator from the OS CSPRNG.
    pub seed: MaskSeed,
    /// Ring and encoding parameters.
    pub params: SecAggParams,
    /// Decryption threshold t (`2t > n + max_colluders`).
    pub threshold: usize,
    /// Smallest participant set a key holder agrees to decrypt (`≥ max_colluders + 2`).
    pub min_participants: usize,
    /// Largest number of clients assumed to collude with the coordinator (c).
    pub max_colluders: usize,
    /// Public reference example count `n_ref`: a client with `n_i` examples uses weight
    /// `min(min(n_i, weight_cap) / n_ref, max_weight)`.
    pub reference_examples: f64,
    /// The most examples one participant's weight stands for this round: the coordinator's influence bound
    /// (a configured cap and a share cap, or 1 for uniform weights), so no participant's weight exceeds its
    /// bounded share.
    pub weight_cap: f64,
    /// Number of model coordinates, without the weight coordinate.
    pub model_len: usize,
    /// The selected participants, in announced order (sorted by id by convention).
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

    /// The participant ids in announced order.
    pub fn participant_ids(&self) -> Vec<ParticipantId> {
        self.participants.iter().map(|p| p.id).collect()
    }

    /// The FedAvg weight for `examples` local examples: `min(min(examples, weight_cap) / n_ref, max_weight)`.
    pub fn weight_for(&self, examples: u64) -> f64 {
        ((examples as f64).min(self.weight_cap) / self.reference_examples).min(self.params.max_weight)
    }

    /// The vector length of one upload: `model_len + 1` (the weight coordinate).
    pub fn vector_len(&self) -> usize {
        self.model_len.saturating_add(1)
    }

    /// The canonical byte encoding that [`hash`](Self::hash) digests: a domain separator, then
    /// every field with a one-byte tag, fixed-width little-endian integers, `f64` bit patterns,
    /// and length prefixes on every string and list (see `canon.rs`). Independent of serde.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Exhaustive destructuring: adding a field without hashing it does not compile.
        let Self {
            federation,
            round,
            nonce,
            model_sha256,
            seed,
            params,
            threshold,
            min_participants,
            max_colluders,
            reference_examples,
            weight_cap,
            model_len,
            participants,
        } = self;
        let mut c = Canon::new(b"cohort/secagg/announcement/v2");
        c.str(0x01, federation).u64(0x02, round.0).bytes(0x03, nonce).bytes(0x04, model_sha256).bytes(0x05, &seed.0);
        params.write_canonical(&mut c);
        c.usize(0x06, *threshold)
            .usize(0x07, *min_participants)
            .usize(0x08, *max_colluders)
            .f64(0x09, *reference_examples)
            .f64(0x0c, *weight_cap)
            .usize(0x0a, *model_len)
            .usize(0x0b, participants.len());
        for p in participants {
            let AnnouncedParticipant { name, id, keys } = p;
            let NodePublicKeys { x25519, ed25519 } = keys;
            c.str(0x10, name).u64(0x11, u64::from(id.get())).bytes(0x12, x25519).bytes(0x13, ed25519);
        }
        c.finish()
    }

    /// SHA-256 of [`canonical_bytes`](Self::canonical_bytes). Different announcements (any
    /// field differing, including the nonce) have different hashes except with negligible
    /// probability (collision resistance of SHA-256). Costs O(n) for n participants: compute it
    /// once per round and reuse it.
    pub fn hash(&self) -> AnnouncementHash {
        AnnouncementHash(Sha256::digest(self.canonical_bytes()).into())
    }

    /// Checks the policy a participant relies on before consenting:
    /// `2t > n + c` and `t ≤ n` (no split, see the module docs), `c + 2 ≤ min_participants ≤ n`,
    /// distinct names and ids, `n ≤ max_clients`, a positive finite reference count,
    /// `1 ≤ model_len` and `model_len + 1 ≤ params.max_coordinates`, and valid parameters
    /// ([`SecAggParams::validate`]).
    ///
    /// # Errors
    /// [`AnnouncementError`] naming the first violated rule.
    pub fn validate(&self) -> Result<(), AnnouncementError> {
        let n = self.participants.len();
        let c = self.max_colluders;
        let t = self.threshold;
        // 2t > n + c, in exact integer arithmetic (u128 cannot overflow for usize inputs).
        if 2 * (t as u128) <= n as u128 + c as u128 || t > n {
            return Err(AnnouncementError::BadThreshold { threshold: t, n, max_colluders: c });
        }
        let required = c.saturating_add(2);
        if self.min_participants < required {
            return Err(AnnouncementError::MinParticipantsTooSmall {
                min_participants: self.min_participants,
                required,
            });
        }
        if self.min_participants > n {
            return Err(AnnouncementError::MinParticipantsTooLarge { min_participants: self.min_participants, n });
        }
        self.params.validate()?;
        if n > self.params.max_clients as usize {
            return Err(AnnouncementError::TooMany { n, max: self.params.max_clients });
        }
        if !(self.reference_examples > 0.0 && self.reference_examples.is_finite()) {
            return Err(AnnouncementError::BadReference(self.reference_examples));
        }
        if !(self.weight_cap > 0.0 && self.weight_cap.is_finite()) {
            return Err(AnnouncementError::BadWeightCap(self.weight_cap));
        }
        if self.model_len == 0 || self.model_len >= self.params.max_coordinates {
            return Err(AnnouncementError::BadModelLength {
                model_len: self.model_len,
                max_coordinates: self.params.max_coordinates,
            });
        }
        let (mut names, mut ids) = (BTreeSet::new(), BTreeSet::new());
        for p in &self.participants {
            if !names.insert(p.name.as_str()) || !ids.insert(p.id) {
                return Err(AnnouncementError::Duplicate(p.name.clone()));
            }
        }
        Ok(())
    }

    /// Verifies `consent` against this announcement: the consenting participant is announced and
    /// its signature verifies (Ed25519 `verify_strict`) under its announced Ed25519 key over this
    /// announcement's hash.
    ///
    /// # Errors
    /// [`AnnouncementError::UnknownParticipant`], [`AnnouncementError::BadConsent`].
    pub fn verify_consent(&self, consent: &Consent) -> Result<(), AnnouncementError> {
        self.verify_consent_with_hash(&self.hash(), consent)
    }

    /// [`verify_consent`](Self::verify_consent) with this announcement's hash precomputed
    /// (`hash` must be `self.hash()`; key holders cache it).
    pub(crate) fn verify_consent_with_hash(
        &self,
        hash: &AnnouncementHash,
        consent: &Consent,
    ) -> Result<(), AnnouncementError> {
        let who = consent.participant;
        let p = self.by_id(who).ok_or(AnnouncementError::UnknownParticipant(who))?;
        let key = p.keys.verifying_key().map_err(|_| AnnouncementError::BadConsent(who))?;
        key.verify_strict(&consent_message(who, hash), &Signature::from_bytes(&consent.signature))
            .map_err(|_| AnnouncementError::BadConsent(who))
    }

    /// The envelope binding context for a share from `sender` to `recipient` under this
    /// announcement (federation, round and announcement hash). Computes the hash (O(n)); use
    /// [`share_contexts_from`](Self::share_contexts_from) / [`share_contexts_to`](Self::share_contexts_to)
    /// in loops.
    pub fn share_context(&self, sender: ParticipantId, recipient: ParticipantId) -> ShareContext {
        self.context_with(self.hash(), sender, recipient)
    }

    fn context_with(
        &self,
        announcement: AnnouncementHash,
        sender: ParticipantId,
        recipient: ParticipantId,
    ) -> ShareContext {
        ShareContext { federation: self.federation.clone(), round: self.round, announcement, sender, recipient }
    }

    /// The contexts of every share `sender` seals, one per announced participant in announced
    /// order (the hash is computed once).
    pub fn share_contexts_from(&self, sender: ParticipantId) -> Vec<(ParticipantId, ShareContext)> {
        let h = self.hash();
        self.participants.iter().map(|p| (p.id, self.context_with(h, sender, p.id))).collect()
    }

    /// The contexts of every share `recipient` opens, one per announced participant in announced
    /// order (the hash is computed once).
    pub fn share_contexts_to(&self, recipient: ParticipantId) -> Vec<(ParticipantId, ShareContext)> {
        let h = self.hash();
        self.participants.iter().map(|p| (p.id, self.context_with(h, p.id, recipient))).collect()
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
///     announcement: AnnouncementHash([7; 32]), sender: ParticipantId::new(1).unwrap(), recipient: ParticipantId::new(2).unwrap() };
/// let share = KeyShare::from_values(vec![1, 2, 3], &[257]).unwrap();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::NodeIdentity;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn announcement(n: u32, t: usize) -> (RoundAnnouncement, Vec<NodeIdentity>) {
        let mut rng = ChaCha20Rng::seed_from_u64(u64::from(n));
        let ids: Vec<NodeIdentity> = (0..n).map(|_| NodeIdentity::generate_with(&mut rng)).collect();
        let a = RoundAnnouncement {
            federation: "f".into(),
            round: RoundId(1),
            nonce: [2; 32],
            model_sha256: [3; 32],
            seed: MaskSeed([1; 32]),
            params: SecAggParams::default(),
            threshold: t,
            min_participants: 3,
            max_colluders: 1,
            reference_examples: 10.0,
            weight_cap: 100.0,
            model_len: 1000,
            participants: (1..=n)
                .map(|i| AnnouncedParticipant {
                    name: format!("n{i}"),
                    id: ParticipantId::new(i).unwrap(),
                    keys: ids[i as usize - 1].public_keys(),
                })
                .collect(),
        };
        (a, ids)
    }

    #[test]
    fn policy_is_checked() {
        assert!(announcement(5, 4).0.validate().is_ok());
        // The old majority rule t = n/2 + 1 = 3 is refused with c = 1: 2·3 ≤ 5 + 1.
        assert_eq!(
            announcement(5, 3).0.validate(),
            Err(AnnouncementError::BadThreshold { threshold: 3, n: 5, max_colluders: 1 })
        );
        assert!(matches!(announcement(4, 5).0.validate(), Err(AnnouncementError::BadThreshold { .. })));
        let (mut a, _) = announcement(5, 4);
        a.max_colluders = 0;
        a.threshold = 3;
        assert!(a.validate().is_ok());
        a.min_participants = 1;
        assert_eq!(a.validate(), Err(AnnouncementError::MinParticipantsTooSmall { min_participants: 1, required: 2 }));
        let (mut a, _) = announcement(5, 4);
        a.min_participants = 2; // c = 1 needs 3
        assert_eq!(a.validate(), Err(AnnouncementError::MinParticipantsTooSmall { min_participants: 2, required: 3 }));
        a.min_participants = 6;
        assert_eq!(a.validate(), Err(AnnouncementError::MinParticipantsTooLarge { min_participants: 6, n: 5 }));
        let (mut a, _) = announcement(5, 4);
        a.participants[1].name = "n1".into();
        assert!(matches!(a.validate(), Err(AnnouncementError::Duplicate(_))));
        let (mut a, _) = announcement(5, 4);
        a.participants[1].id = a.participants[0].id;
        assert!(matches!(a.validate(), Err(AnnouncementError::Duplicate(_))));
        let (mut a, _) = announcement(5, 4);
        a.model_len = 0;
        assert!(matches!(a.validate(), Err(AnnouncementError::BadModelLength { .. })));
        a.model_len = a.params.max_coordinates;
        assert!(matches!(a.validate(), Err(AnnouncementError::BadModelLength { .. })));
        a.model_len = a.params.max_coordinates - 1;
        assert!(a.validate().is_ok());
        let (mut a, _) = announcement(5, 4);
        a.reference_examples = f64::NAN;
        assert!(matches!(a.validate(), Err(AnnouncementError::BadReference(_))));
        let (mut a, _) = announcement(5, 4);
        a.weight_cap = 0.0;
        assert!(matches!(a.validate(), Err(AnnouncementError::BadWeightCap(_))));
        let (mut a, _) = announcement(5, 4);
        a.params.error_eta = 2;
        assert!(matches!(a.validate(), Err(AnnouncementError::Params(_))));
        let (a, _) = announcement(5, 4);
        assert_eq!(a.weight_for(20), 2.0);
        // The weight cap (100 examples) binds before the encoding's max_weight (16).
        assert_eq!(a.weight_for(10_000), 10.0);
        let (mut a, _) = announcement(5, 4);
        a.weight_cap = 1e9;
        assert_eq!(a.weight_for(10_000), 16.0);
        assert!(decode_sealed(a.share_context(a.participants[0].id, a.participants[1].id), &[0; 50]).is_err());
    }

    #[test]
    fn collusion_policy_derives_the_least_safe_values() {
        assert_eq!(collusion_policy(5, 1), Ok((4, 3)));
        assert_eq!(collusion_policy(5, 0), Ok((3, 2)));
        assert_eq!(collusion_policy(10, 1), Ok((6, 3)));
        assert_eq!(collusion_policy(10, 3), Ok((7, 5)));
        assert_eq!(collusion_policy(2, 0), Ok((2, 2)));
        assert!(matches!(collusion_policy(3, 2), Err(AnnouncementError::ImpossiblePolicy { .. })));
        assert!(matches!(collusion_policy(1, 0), Err(AnnouncementError::ImpossiblePolicy { .. })));
        assert!(matches!(collusion_policy(4, 3), Err(AnnouncementError::ImpossiblePolicy { .. })));
        for n in 1..40 {
            for c in 0..n {
                if let Ok((t, min)) = collusion_policy(n, c) {
                    assert!(2 * t > n + c && t <= n && min == c + 2 && min <= n);
                    // Least: t − 1 would allow a split.
                    assert!(2 * (t - 1) <= n + c);
                }
            }
        }
    }

    /// Subsets of {0..n} of size k, as bitmasks.
    fn subsets(n: usize, k: usize) -> Vec<u32> {
        (0u32..1 << n).filter(|m| m.count_ones() as usize == k).collect()
    }

    /// Whether the coordinator can obtain two decryptions: two responder sets of size `t` whose
    /// intersection holds only colluders (at most `c` members, the colluders' choice).
    fn split_exists(n: usize, c: usize, t: usize) -> bool {
        let sets = subsets(n, t);
        sets.iter().any(|a| sets.iter().any(|b| a != b && (a & b).count_ones() as usize <= c))
    }

    /// No split under `collusion_policy`, by enumeration for every small (n, c); and the old rule
    /// t = ⌊n/2⌋ + 1 allows one as soon as there is one colluder (n = 5, t = 3, c = 1).
    #[test]
    fn no_split_under_the_collusion_policy() {
        for n in 2..=9 {
            for c in 0..n {
                if let Ok((t, _)) = collusion_policy(n, c) {
                    assert!(!split_exists(n, c, t), "split for n={n} c={c} t={t}");
                    // The policy is tight: one less and a split exists.
                    if t > 1 {
                        assert!(split_exists(n, c, t - 1), "n={n} c={c} t={t}");
                    }
                }
            }
        }
        // The old rule.
        assert!(split_exists(5, 1, 5 / 2 + 1));
        // Concretely: T1 = {1,2,3}, T2 = {3,4,5}, holder 3 the colluder.
        assert_eq!((0b00111u32 & 0b11100).count_ones(), 1);
    }

    #[test]
    fn hash_covers_every_field() {
        let (a, _) = announcement(4, 3);
        let h = a.hash();
        assert_eq!(h, a.clone().hash(), "deterministic");
        let mut variants: Vec<RoundAnnouncement> = Vec::new();
        let mut push = |f: &dyn Fn(&mut RoundAnnouncement)| {
            let mut b = a.clone();
            f(&mut b);
            variants.push(b);
        };
        push(&|b| b.federation.push('x'));
        push(&|b| b.round = RoundId(2));
        push(&|b| b.nonce[31] ^= 1);
        push(&|b| b.model_sha256[0] ^= 1);
        push(&|b| b.seed.0[5] ^= 1);
        push(&|b| b.threshold += 1);
        push(&|b| b.min_participants += 1);
        push(&|b| b.max_colluders += 1);
        push(&|b| b.reference_examples = 10.000001);
        push(&|b| b.weight_cap = 100.000001);
        push(&|b| b.model_len += 1);
        push(&|b| b.participants[0].name.push('x'));
        push(&|b| b.participants[1].id = ParticipantId::new(77).unwrap());
        push(&|b| b.participants[2].keys.x25519[0] ^= 1);
        push(&|b| b.participants[3].keys.ed25519[9] ^= 1);
        push(&|b| b.participants.swap(0, 1));
        push(&|b| {
            b.participants.pop();
        });
        push(&|b| b.params.polynomial_size *= 2);
        push(&|b| b.params.moduli[2] -= 2);
        push(&|b| b.params.fraction_bits += 1);
        push(&|b| b.params.clip = 3.0);
        push(&|b| b.params.max_weight = 15.0);
        push(&|b| b.params.max_clients -= 1);
        push(&|b| b.params.error_eta += 1);
        push(&|b| b.params.flooding_bits += 1);
        push(&|b| b.params.slots -= 1);
        push(&|b| b.params.slot_bits -= 1);
        push(&|b| b.params.moduli.swap(0, 1));
        push(&|b| {
            b.params.moduli.pop();
        });
        push(&|b| b.params.max_coordinates -= 1);
        push(&|b| b.params.insecure_toy = true);
        // Moving bytes between adjacent strings is caught by the length prefixes.
        let mut x = a.clone();
        x.federation = "fn".into();
        x.participants[0].name = "1".into();
        let mut y = a.clone();
        y.federation = "f".into();
        y.participants[0].name = "n1".into();
        assert_ne!(x.hash(), y.hash());
        let mut seen = BTreeSet::new();
        seen.insert(h);
        for (i, v) in variants.iter().enumerate() {
            assert!(seen.insert(v.hash()), "variant {i} collides");
        }
        assert_eq!(format!("{h:?}").len(), "AnnouncementHash()".len() + 64);
    }

    #[test]
    fn consents_verify_and_forgeries_are_refused() {
        let (a, ids) = announcement(4, 3);
        let h = a.hash();
        let p1 = a.participants[0].id;
        let c = sign_consent(&ids[0], p1, &h);
        assert_eq!(a.verify_consent(&c), Ok(()));
        // Another participant's key, another hash, a tampered signature, an unknown id.
        let forged = sign_consent(&ids[1], p1, &h);
        assert_eq!(a.verify_consent(&forged), Err(AnnouncementError::BadConsent(p1)));
        let other = sign_consent(&ids[0], p1, &AnnouncementHash([9; 32]));
        assert_eq!(a.verify_consent(&other), Err(AnnouncementError::BadConsent(p1)));
        let mut t = c;
        t.signature[10] ^= 1;
        assert_eq!(a.verify_consent(&t), Err(AnnouncementError::BadConsent(p1)));
        let stranger = ParticipantId::new(99).unwrap();
        let s = sign_consent(&ids[0], stranger, &h);
        assert_eq!(a.verify_consent(&s), Err(AnnouncementError::UnknownParticipant(stranger)));
        // A consent signed for p1 does not count for p2 even with p1's key listed for p2.
        let relabelled = Consent { participant: a.participants[1].id, ..c };
        assert_eq!(a.verify_consent(&relabelled), Err(AnnouncementError::BadConsent(a.participants[1].id)));
    }
}

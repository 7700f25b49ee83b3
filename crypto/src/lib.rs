//! Threshold RLWE secure aggregation for Cohort. Math only: no I/O, no protobuf.
//!
//! # Construction
//!
//! Additively homomorphic RLWE with a common, seed-expanded mask, following Stevens et al.,
//! "Efficient Differentially Private Secure Aggregation for Federated Learning via Hardness of
//! Learning with Errors" (USENIX Security 2022), the threshold key handling of Mouchet et al.,
//! "Multiparty Homomorphic Encryption from Ring-Learning-with-Errors" (PoPETs 2021), and the
//! per-round Shamir sharing / dropout model of Bell et al., "Secure Single-Server Aggregation with
//! (Poly)Logarithmic Overhead" (SecAgg+, CCS 2020).
//!
//! Per round `r` with public mask seed:
//! 1. every client `i` samples a ternary round key `s_i` ([`keys::RoundSecretKey`]) and Shamir-shares
//!    it coefficient-wise over GF(q) to every key holder ([`shamir`]), each share sealed and signed
//!    end to end ([`envelope`]);
//! 2. every client uploads only the bodies `b_{i,j} = a_{r,j}·s_i + e_{i,j} + Δ·m_{i,j} mod q`
//!    ([`encrypt`]), where the masks `a_{r,j}` are expanded from the seed ([`mask`]) and `m` is the
//!    fixed-point encoding of the (weighted) update ([`encoding`]);
//! 3. the coordinator sums bodies as they stream in ([`aggregate`]);
//! 4. each key holder answers one decryption request per round with
//!    `λ_k·a_{r,j}·Σ_{i∈S} share_i(k) + smudging` ([`keyholder`]); the coordinator subtracts the
//!    partials and rounds ([`keyholder::combine`]), obtaining `Σ_{i∈S} m_i` exactly.
//!
//! [`sim::run_secure_round`] runs the whole round in memory (used by benchmarks and tests).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aggregate;
pub mod announce;
mod canon;
pub mod encoding;
pub mod encrypt;
pub mod envelope;
pub mod ids;
pub mod journal;
pub mod keyholder;
pub mod keys;
pub mod mask;
pub mod params;
pub mod ring;
pub mod shamir;
pub mod sim;

pub use aggregate::{AggregateBody, AggregateError, Aggregator};
pub use announce::{
    AnnouncedParticipant, AnnouncementError, AnnouncementHash, Consent, RoundAnnouncement,
    collusion_policy, sign_consent,
};
pub use encoding::{EncodingError, Weight};
pub use encrypt::{EncryptError, allocate_and_encrypt_update, encrypt_update};
pub use envelope::{EnvelopeError, SealedShare, ShareContext, open_share, seal_share};
pub use ids::{ParticipantId, RoundId};
pub use journal::{AnswerJournal, JournalError, MemoryJournal};
pub use keyholder::{DecryptError, DecryptionRequest, KeyHolder, PartialDecryption, combine};
pub use keys::{KeyError, NodeIdentity, NodePublicKeys, RoundSecretKey};
pub use mask::MaskSeed;
pub use params::{ParamsError, ParamsSummary, SecAggContext, SecAggParams};
pub use shamir::{KeyShare, ShamirError};

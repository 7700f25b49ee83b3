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
//! Per announced round `r` ([`announce::RoundAnnouncement`], hashed and signed by every client,
//! with `t` and `min_participants` from [`announce::collusion_policy`]):
//! 1. every client `i` samples a ternary round key `s_i` ([`keys::RoundSecretKey`]) and
//!    Shamir-shares it coefficient-wise over `Z_Q` (independently over each RNS prime, [`shamir`])
//!    to every key holder, each share sealed, signed and bound to the announcement hash end to end
//!    ([`envelope`]);
//! 2. every client uploads only the bodies `b_{i,j} = a_{r,j}·s_i + e_{i,j} + Δ·V_{i,j} mod Q`
//!    ([`encrypt`]), where the masks `a_{r,j}` are expanded from the seed ([`mask`]) and `V` packs
//!    three fixed-point coordinates of the (weighted) update per ring coefficient ([`encoding`]);
//! 3. the coordinator sums bodies as they stream in ([`aggregate`]);
//! 4. each key holder answers one decryption request per round (durably journaled,
//!    [`journal`]), and only for a set `S` of at least `min_participants` members that all
//!    consented to its announcement, with `λ_k·a_{r,j}·Σ_{i∈S} share_i(k) + flooding`
//!    ([`keyholder`]); the coordinator subtracts the partials, CRT-decodes and unpacks
//!    ([`keyholder::combine`]), obtaining `Σ_{i∈S} m_i` exactly.
//!
//! Parameters ([`params`]): `N = 8192`, `Q` the product of three 62-bit NTT primes (log2 Q ≈ 186,
//! 128-bit security by the HE Security Standard), flooding noise of `2^76` per holder so that the
//! partial decryptions of a round are within statistical distance `2^-40` of a simulation from the
//! sum alone over up to `2^24` coordinates, `Δ = 2^86`, three 32-bit slots per coefficient: 8
//! upload bytes per parameter.
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
    AnnouncedParticipant, AnnouncementError, AnnouncementHash, Consent, RoundAnnouncement, collusion_policy,
    sign_consent,
};
pub use encoding::{EncodingError, Weight};
pub use encrypt::{EncryptError, allocate_and_encrypt_update, encrypt_update};
pub use envelope::{EnvelopeError, SealedShare, ShareContext, open_share, seal_share};
pub use ids::{ParticipantId, RoundId};
pub use journal::{AnswerJournal, JournalError, MemoryJournal};
pub use keyholder::{DecryptError, DecryptionRequest, KeyHolder, PartialDecryption, combine};
pub use keys::{KeyError, NodeIdentity, NodePublicKeys, RoundSecretKey, SecretRng};
pub use mask::MaskSeed;
pub use params::{LayoutError, ParamsError, ParamsSummary, SecAggContext, SecAggParams};
pub use shamir::{KeyShare, ShamirError};

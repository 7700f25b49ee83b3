//! Threshold partial decryption (key-holder side) and combination (coordinator side).
//!
//! Following the collective decryption of Mouchet et al. (PoPETs 2021) with Shamir-shared keys
//! (threshold variant, as in their §5 / Bell et al.'s SecAgg+ dropout model): for the announced
//! participant set `S` and responder set `T` (`|T| ≥ t`), holder `k ∈ T` returns
//! `d_{k,j} = λ_k · a_{r,j} · Σ_{i∈S} share_i(k) + u_{k,j}` where `λ_k` is its Lagrange
//! coefficient at 0 over `T` (per RNS prime) and `u` is flooding noise, one integer per ring
//! coefficient uniform on `[−2^b, 2^b)` (`b = 76` by default), reduced modulo every prime. Then
//! `Σ_{k∈T} d_k = a·Σ_{i∈S} s_i + Σ u`, and `Σ_{i∈S} b_i − Σ_k d_k = Δ·V + Σ e_i − Σ u` with `V`
//! the packed sums, which [`combine`] decodes exactly (CRT, rounding by Δ, slot unpacking) under
//! the parameter budget, refusing with [`DecryptError::Garbled`] anything that is not within the
//! noise bound of a valid packed sum.
//!
//! The flooding does two jobs: each partial is masked by `a·λ_k·Σ share_i(k)` (uniform for the
//! holders beyond any `t − 1`), so share sums are never revealed, and it hides the aggregated
//! encryption error `E = Σ e_i` (|E| ≤ n_max·η ≈ 2^12.4): the decryptor's view is within
//! statistical distance `L·n_max·η/2^(b+1) ≤ 2^-40` over the `L ≤ max_coordinates` released
//! coordinates of a simulation from `Σ m_i` alone (noise flooding, Asharov et al., EUROCRYPT
//! 2012; Mouchet et al., PoPETs 2021). The bound and its proof sketch are in [`crate::params`];
//! [`SecAggContext::statistical_distance_log2`] evaluates it.
//!
//! Refusals (all checked before anything is recorded or computed, each with a typed
//! [`DecryptError`]): a holder answers at most **one** request per round, enforced in memory and
//! by its durable [`AnswerJournal`] (recorded *before* the partial is computed, so a restarted
//! holder cannot answer again); it refuses requests for another round or announcement
//! ([`AnnouncementHash`]), decryption sets that are empty, contain non-participants, are smaller
//! than `min_participants` or lack a valid [`Consent`] of every member over the holder's own
//! announcement, senders it holds no share for, and responder sets smaller than `t`, with
//! non-participants, or without itself. With `t` and `min_participants` from
//! [`crate::announce::collusion_policy`] this gives the design note's guarantees: at most one
//! sum per round (no split), over at least two honest updates.

use crate::aggregate::AggregateBody;
use crate::announce::{AnnouncementError, AnnouncementHash, Consent, RoundAnnouncement};
use crate::encoding::decode_coefficient;
use crate::ids::{ParticipantId, RoundId};
use crate::journal::{AnswerJournal, JournalError};
use crate::keys::SecretRng;
use crate::params::LayoutError;
use crate::params::SecAggContext;
use crate::ring::{add_mod, mul_mod_fast, mul_ntt_into_coefficients, reduce_i128, sub_mod};
use crate::shamir::{KeyShare, ShamirError, lagrange_at_zero_rns};
use rand::CryptoRng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;
use zeroize::Zeroizing;

/// Errors of partial decryption and combination.
#[derive(Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum DecryptError {
    /// The request or partial is for another round.
    #[error("wrong round: expected {expected}, got {got}")]
    WrongRound {
        /// This holder's / request's round.
        expected: RoundId,
        /// The round received.
        got: RoundId,
    },
    /// The request or partial names another announcement than this holder's / the request's.
    #[error("wrong announcement: expected {expected}, got {got}")]
    WrongAnnouncement {
        /// This holder's / request's announcement hash.
        expected: AnnouncementHash,
        /// The announcement named.
        got: AnnouncementHash,
    },
    /// This holder already answered a decryption request this round (in memory, or according to
    /// its durable journal).
    #[error("already answered a decryption request in this round")]
    AlreadyAnswered,
    /// The durable journal could not record the answer; nothing was released.
    #[error("answer journal: {0}")]
    Journal(JournalError),
    /// The announcement the holder was built from is invalid.
    #[error("invalid announcement: {0}")]
    Announcement(#[from] AnnouncementError),
    /// The context's parameters differ from the announced ones.
    #[error("the parameter context differs from the announced parameters")]
    ParamsMismatch,
    /// A set (decryption set, responders) names someone who is not an announced participant, or
    /// the holder itself is not announced.
    #[error("{0} is not an announced participant")]
    NotAParticipant(ParticipantId),
    /// The participant set is empty.
    #[error("empty participant set")]
    EmptyParticipantSet,
    /// The participant set is smaller than `min_participants`.
    #[error("participant set of {got} is below the minimum of {min}")]
    TooFewParticipants {
        /// Size of S.
        got: usize,
        /// min_participants.
        min: usize,
    },
    /// The participant or responder set is larger than the parameters' `max_clients`.
    #[error("set of {got} exceeds max_clients {max}")]
    TooManyParticipants {
        /// Size of the set.
        got: usize,
        /// max_clients.
        max: u32,
    },
    /// A member of the decryption set has no consent in the request.
    #[error("no consent from {0}")]
    MissingConsent(ParticipantId),
    /// A consent in the request does not verify for this holder's announcement.
    #[error("consent of {0} does not verify")]
    BadConsent(ParticipantId),
    /// A consent from outside the decryption set, or a second consent of one member.
    #[error("unexpected or duplicate consent from {0}")]
    UnexpectedConsent(ParticipantId),
    /// The holder has no share from this sender.
    #[error("no key share held from {0}")]
    MissingShare(ParticipantId),
    /// A share from this sender was already received.
    #[error("a share from {0} was already received")]
    DuplicateShare(ParticipantId),
    /// A share of the wrong length.
    #[error("share has {got} coefficients, expected {expected}")]
    BadShareLength {
        /// Expected length.
        expected: usize,
        /// Received.
        got: usize,
    },
    /// A set lists the same participant twice.
    #[error("{0} listed twice")]
    Duplicate(ParticipantId),
    /// This holder is not in the responder set.
    #[error("{0} is not in the responder set")]
    NotAResponder(ParticipantId),
    /// Fewer responders or partials than the threshold.
    #[error("{got} partial decryptions, threshold is {threshold}")]
    NotEnoughPartials {
        /// Responders or partials available.
        got: usize,
        /// Threshold t.
        threshold: usize,
    },
    /// A partial from outside the responder set, or a responder without a partial.
    #[error("partials do not match the responder set (offending {0})")]
    ResponderMismatch(ParticipantId),
    /// The aggregate was not summed over the requested participant set.
    #[error("aggregate participants differ from the requested set")]
    ParticipantSetMismatch,
    /// Vector lengths disagree.
    #[error("length {got}, expected {expected}")]
    LengthMismatch {
        /// Expected.
        expected: usize,
        /// Received.
        got: usize,
    },
    /// A partial coefficient is not reduced mod q.
    #[error("partial from {0} has a coefficient >= q")]
    OutOfRange(ParticipantId),
    /// The combined value is not of the form Δ·M + small noise: wrong or missing partials.
    #[error("decryption produced garbage at coordinate {0} (wrong or insufficient partials)")]
    Garbled(usize),
    /// Lagrange interpolation failed.
    #[error(transparent)]
    Shamir(#[from] ShamirError),
}

/// A decryption request broadcast by the coordinator for one round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecryptionRequest {
    /// The round.
    pub round: RoundId,
    /// The announcement every member of `participants` consented to.
    pub announcement: AnnouncementHash,
    /// The participant set `S` whose bodies were summed.
    pub participants: Vec<ParticipantId>,
    /// One consent per member of `S`, over `announcement`.
    pub consents: Vec<Consent>,
    /// The responder set `T` (all of them must answer; `|T| ≥ t`).
    pub responders: Vec<ParticipantId>,
    /// Vector length (model coordinates + 1 weight coordinate).
    pub len: usize,
}

/// One holder's answer: `λ_k · a · Σ_{i∈S} share_i(k) + smudging`, one residue per coordinate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialDecryption {
    /// The round.
    pub round: RoundId,
    /// The announcement it answers.
    pub announcement: AnnouncementHash,
    /// The responding holder.
    pub responder: ParticipantId,
    /// The values, length `len`.
    pub values: Vec<u64>,
}

fn distinct(set: &[ParticipantId]) -> Result<BTreeSet<ParticipantId>, DecryptError> {
    let mut out = BTreeSet::new();
    for &p in set {
        if !out.insert(p) {
            return Err(DecryptError::Duplicate(p));
        }
    }
    Ok(out)
}

/// One flooding sample `u`, uniform on `[−2^b, 2^b)` (`b ≤ 100`), from `b + 1` random bits.
#[inline(always)]
fn smudging_sample<R: CryptoRng + ?Sized>(rng: &mut R, b: u32) -> i128 {
    let lo = u128::from(rng.next_u64());
    let bits = if b < 64 { lo } else { lo | (u128::from(rng.next_u64()) << 64) };
    (bits & ((1u128 << (b + 1)) - 1)) as i128 - (1i128 << b)
}

/// A key holder's state for one announced round: the announcement (and its hash), the Shamir
/// shares it received and whether it has answered a decryption request. Shares are zeroized on
/// drop.
#[derive(Debug)]
pub struct KeyHolder {
    ctx: SecAggContext,
    announcement: RoundAnnouncement,
    hash: AnnouncementHash,
    me: ParticipantId,
    len: usize,
    shares: BTreeMap<ParticipantId, KeyShare>,
    answered: bool,
}

impl KeyHolder {
    /// A fresh holder `me` for the round of `announcement` (which it validates and keeps, with
    /// its hash). The expected vector length is `model_len + 1`.
    ///
    /// # Errors
    /// [`DecryptError::Announcement`] for an invalid announcement,
    /// [`DecryptError::ParamsMismatch`] if `ctx` was built from other parameters,
    /// [`DecryptError::NotAParticipant`] if `me` is not announced.
    pub fn new(ctx: &SecAggContext, announcement: &RoundAnnouncement, me: ParticipantId) -> Result<Self, DecryptError> {
        announcement.validate()?;
        if *ctx.params() != announcement.params {
            return Err(DecryptError::ParamsMismatch);
        }
        if announcement.by_id(me).is_none() {
            return Err(DecryptError::NotAParticipant(me));
        }
        Ok(Self {
            ctx: ctx.clone(),
            announcement: announcement.clone(),
            hash: announcement.hash(),
            me,
            len: announcement.vector_len(),
            shares: BTreeMap::new(),
            answered: false,
        })
    }

    /// This holder's id.
    pub fn id(&self) -> ParticipantId {
        self.me
    }

    /// The hash of this holder's announcement.
    pub fn announcement_hash(&self) -> AnnouncementHash {
        self.hash
    }

    /// Whether this holder instance has answered a decryption request (the durable record is the
    /// journal's).
    pub fn has_answered(&self) -> bool {
        self.answered
    }

    /// Senders whose shares are held.
    pub fn senders(&self) -> Vec<ParticipantId> {
        self.shares.keys().copied().collect()
    }

    /// Stores `sender`'s share of its round key (including this holder's own share).
    ///
    /// # Errors
    /// [`DecryptError::NotAParticipant`], [`DecryptError::DuplicateShare`],
    /// [`DecryptError::BadShareLength`].
    pub fn receive_share(&mut self, sender: ParticipantId, share: KeyShare) -> Result<(), DecryptError> {
        if self.announcement.by_id(sender).is_none() {
            return Err(DecryptError::NotAParticipant(sender));
        }
        match self.ctx.check_share(share.values()) {
            Ok(()) => {}
            Err(LayoutError::WrongLength { expected, got }) => {
                return Err(DecryptError::BadShareLength { expected, got });
            }
            Err(_) => return Err(DecryptError::Shamir(ShamirError::OutOfRange)),
        }
        if self.shares.contains_key(&sender) {
            return Err(DecryptError::DuplicateShare(sender));
        }
        self.shares.insert(sender, share);
        Ok(())
    }

    /// Answers `request` with smudging from an OS-seeded [`SecretRng`].
    ///
    /// # Errors
    /// As [`KeyHolder::partial_decrypt_with`].
    pub fn partial_decrypt(
        &mut self,
        request: &DecryptionRequest,
        journal: &mut dyn AnswerJournal,
    ) -> Result<PartialDecryption, DecryptError> {
        self.partial_decrypt_with(request, journal, &mut SecretRng::from_os())
    }

    /// Every check of a request, in order, without side effects.
    fn check_request(&self, request: &DecryptionRequest) -> Result<Vec<u64>, DecryptError> {
        let round = self.announcement.round;
        if request.round != round {
            return Err(DecryptError::WrongRound { expected: round, got: request.round });
        }
        if request.announcement != self.hash {
            return Err(DecryptError::WrongAnnouncement { expected: self.hash, got: request.announcement });
        }
        if self.answered {
            return Err(DecryptError::AlreadyAnswered);
        }
        if request.len != self.len {
            return Err(DecryptError::LengthMismatch { expected: self.len, got: request.len });
        }
        let max = self.ctx.params().max_clients;
        // The decryption set S.
        if request.participants.is_empty() {
            return Err(DecryptError::EmptyParticipantSet);
        }
        let participants = distinct(&request.participants)?;
        if let Some(&p) = participants.iter().find(|p| self.announcement.by_id(**p).is_none()) {
            return Err(DecryptError::NotAParticipant(p));
        }
        let min = self.announcement.min_participants;
        if participants.len() < min {
            return Err(DecryptError::TooFewParticipants { got: participants.len(), min });
        }
        if participants.len() > max as usize {
            return Err(DecryptError::TooManyParticipants { got: participants.len(), max });
        }
        // Exactly one valid consent per member of S, none from outside S.
        let mut consented = BTreeSet::new();
        for c in &request.consents {
            if !participants.contains(&c.participant) || !consented.insert(c.participant) {
                return Err(DecryptError::UnexpectedConsent(c.participant));
            }
        }
        if let Some(&p) = participants.iter().find(|p| !consented.contains(p)) {
            return Err(DecryptError::MissingConsent(p));
        }
        for c in &request.consents {
            self.announcement
                .verify_consent_with_hash(&self.hash, c)
                .map_err(|_| DecryptError::BadConsent(c.participant))?;
        }
        if let Some(&missing) = participants.iter().find(|p| !self.shares.contains_key(p)) {
            return Err(DecryptError::MissingShare(missing));
        }
        // The responder set T.
        let responders = distinct(&request.responders)?;
        if let Some(&p) = responders.iter().find(|p| self.announcement.by_id(**p).is_none()) {
            return Err(DecryptError::NotAParticipant(p));
        }
        if !responders.contains(&self.me) {
            return Err(DecryptError::NotAResponder(self.me));
        }
        let threshold = self.announcement.threshold;
        if responders.len() < threshold {
            return Err(DecryptError::NotEnoughPartials { got: responders.len(), threshold });
        }
        Ok(lagrange_at_zero_rns(self.ctx.moduli(), &request.responders, self.me)?)
    }

    /// Answers `request`, at most once per round. Every check happens first (a refused request
    /// changes nothing); then the answer is recorded in `journal` (durably, by the caller's
    /// implementation) and only then is the partial computed and returned.
    ///
    /// Checks, in order: round; announcement hash; not yet answered by this instance; length;
    /// `S` non-empty, distinct, announced, `min_participants ≤ |S| ≤ max_clients`; exactly one
    /// consent per member of `S` (none from outside), each valid for this announcement; a share
    /// held from every member of `S`; responders distinct, announced, containing this holder,
    /// at least `t` of them.
    ///
    /// # Errors
    /// [`DecryptError::WrongRound`], [`DecryptError::WrongAnnouncement`],
    /// [`DecryptError::AlreadyAnswered`] (this instance, or the journal), [`DecryptError::Journal`]
    /// (storage failure), [`DecryptError::LengthMismatch`], [`DecryptError::EmptyParticipantSet`],
    /// [`DecryptError::Duplicate`], [`DecryptError::NotAParticipant`],
    /// [`DecryptError::TooFewParticipants`], [`DecryptError::TooManyParticipants`],
    /// [`DecryptError::UnexpectedConsent`], [`DecryptError::MissingConsent`],
    /// [`DecryptError::BadConsent`], [`DecryptError::MissingShare`],
    /// [`DecryptError::NotAResponder`], [`DecryptError::NotEnoughPartials`] (responder set below t).
    pub fn partial_decrypt_with<R: CryptoRng + ?Sized>(
        &mut self,
        request: &DecryptionRequest,
        journal: &mut dyn AnswerJournal,
        rng: &mut R,
    ) -> Result<PartialDecryption, DecryptError> {
        let lambdas = self.check_request(request)?;
        journal.record_answer(self.announcement.round, &self.hash).map_err(|e| match e {
            JournalError::AlreadyAnswered => DecryptError::AlreadyAnswered,
            other => DecryptError::Journal(other),
        })?;
        self.answered = true;
        let participants = distinct(&request.participants)?;
        let ctx = &self.ctx;
        let (n, primes) = (ctx.polynomial_size(), ctx.num_primes());
        // F_i = λ_{k,i} · Σ_{s∈S} share_s(k) mod q_i, then its NTT, per prime.
        let mut f = Zeroizing::new(vec![0u64; primes * n]);
        for p in &participants {
            if let Some(share) = self.shares.get(p) {
                for (i, &q) in ctx.moduli().iter().enumerate() {
                    let block = i * n..(i + 1) * n;
                    for (acc, &v) in f[block.clone()].iter_mut().zip(&share.values()[block]) {
                        *acc = add_mod(*acc, v, q);
                    }
                }
            }
        }
        for (i, block) in f.chunks_exact_mut(n).enumerate() {
            let d = ctx.rns().div[i];
            for v in block.iter_mut() {
                *v = mul_mod_fast(*v, lambdas[i], d);
            }
            ctx.plan(i).fwd(block);
        }

        // d_k = a·F + u, u uniform on [−2^b, 2^b) per coefficient (one integer for all primes).
        let b = ctx.derived().smudging_bits;
        let expander = self.announcement.seed.expander(self.announcement.round);
        let mut buf = Zeroizing::new(vec![0u64; primes * n]);
        let mut values = vec![0u64; ctx.residues_len(self.len)];
        for j in 0..ctx.num_chunks(self.len) {
            for (i, (block, f_hat)) in buf.chunks_exact_mut(n).zip(f.chunks_exact(n)).enumerate() {
                expander.expand_ntt(ctx, j, i, block);
                mul_ntt_into_coefficients(ctx.plan(i), block, f_hat);
            }
            let c = ctx.chunk_coefficients(j, self.len).len();
            let out = &mut values[ctx.chunk_residues(j, self.len)];
            for t in 0..c {
                let u = Zeroizing::new(smudging_sample(rng, b));
                for i in 0..primes {
                    let (d, q) = (ctx.rns().div[i], ctx.moduli()[i]);
                    out[i * c + t] = add_mod(buf[i * n + t], reduce_i128(*u, d), q);
                }
            }
        }
        Ok(PartialDecryption { round: self.announcement.round, announcement: self.hash, responder: self.me, values })
    }
}

/// Combines the aggregate with the partials of every responder of `request` and decodes the
/// integer message sums `Σ_{i∈S} m_i` (exact).
///
/// # Errors
/// [`DecryptError::NotEnoughPartials`] if fewer than `threshold` responders/partials;
/// [`DecryptError::WrongRound`], [`DecryptError::ResponderMismatch`],
/// [`DecryptError::ParticipantSetMismatch`], [`DecryptError::LengthMismatch`],
/// [`DecryptError::OutOfRange`], [`DecryptError::Duplicate`]; [`DecryptError::Garbled`] if the
/// result is not within the noise of a valid message (wrong partials).
pub fn combine(
    ctx: &SecAggContext,
    request: &DecryptionRequest,
    threshold: usize,
    aggregate: &AggregateBody,
    partials: &[PartialDecryption],
) -> Result<Vec<i64>, DecryptError> {
    let responders = distinct(&request.responders)?;
    if responders.len() < threshold || partials.len() < threshold {
        return Err(DecryptError::NotEnoughPartials { got: responders.len().min(partials.len()), threshold });
    }
    let participants = distinct(&request.participants)?;
    if !participants.iter().eq(aggregate.participants().iter()) {
        return Err(DecryptError::ParticipantSetMismatch);
    }
    let residues = ctx.residues_len(request.len);
    if aggregate.sum().len() != residues {
        return Err(DecryptError::LengthMismatch { expected: residues, got: aggregate.sum().len() });
    }
    let mut seen = BTreeSet::new();
    for p in partials {
        if p.round != request.round {
            return Err(DecryptError::WrongRound { expected: request.round, got: p.round });
        }
        if p.announcement != request.announcement {
            return Err(DecryptError::WrongAnnouncement { expected: request.announcement, got: p.announcement });
        }
        if !responders.contains(&p.responder) {
            return Err(DecryptError::ResponderMismatch(p.responder));
        }
        if !seen.insert(p.responder) {
            return Err(DecryptError::Duplicate(p.responder));
        }
        if p.values.len() != residues {
            return Err(DecryptError::LengthMismatch { expected: residues, got: p.values.len() });
        }
    }
    if let Some(&missing) = responders.iter().find(|r| !seen.contains(r)) {
        return Err(DecryptError::ResponderMismatch(missing));
    }
    combine_unchecked(ctx, request.len, aggregate.sum(), partials)
}

/// `decode(aggregate − Σ partials)` for a vector of `len` coordinates, without set checks
/// (tests use it to show that partials for the wrong responder set yield garbage).
pub(crate) fn combine_unchecked(
    ctx: &SecAggContext,
    len: usize,
    aggregate: &[u64],
    partials: &[PartialDecryption],
) -> Result<Vec<i64>, DecryptError> {
    let residues = ctx.residues_len(len);
    if aggregate.len() != residues {
        return Err(DecryptError::LengthMismatch { expected: residues, got: aggregate.len() });
    }
    for p in partials {
        ctx.check_residues(len, &p.values).map_err(|e| match e {
            LayoutError::WrongLength { expected, got } => DecryptError::LengthMismatch { expected, got },
            _ => DecryptError::OutOfRange(p.responder),
        })?;
    }
    let (primes, k) = (ctx.num_primes(), ctx.slots());
    let mut out = vec![0i64; len];
    let mut acc = vec![0u64; primes * ctx.polynomial_size()];
    let mut residue = [0u64; crate::params::MAX_PRIMES];
    for j in 0..ctx.num_chunks(len) {
        let range = ctx.chunk_residues(j, len);
        let coefficients = ctx.chunk_coefficients(j, len);
        let c = coefficients.len();
        let acc = &mut acc[..range.len()];
        acc.copy_from_slice(&aggregate[range.clone()]);
        for p in partials {
            let values = &p.values[range.clone()];
            for (i, &q) in ctx.moduli().iter().enumerate() {
                let block = i * c..(i + 1) * c;
                for (a, &v) in acc[block.clone()].iter_mut().zip(&values[block]) {
                    *a = sub_mod(*a, v, q);
                }
            }
        }
        for (t, coefficient) in coefficients.enumerate() {
            for (i, r) in residue[..primes].iter_mut().enumerate() {
                *r = acc[i * c + t];
            }
            let first = coefficient * k;
            let slots = first..(first + k).min(len);
            decode_coefficient(ctx, &residue[..primes], &mut out[slots]).map_err(|()| DecryptError::Garbled(first))?;
        }
    }
    Ok(out)
}

//! A complete secure-aggregation round in memory: announcement and consents, key generation,
//! Shamir sharing through sealed envelopes, encryption, streaming aggregation, threshold
//! decryption with dropouts (each holder gated by its answer journal), decoding. Used by
//! benchmarks and tests; the real protocol state machines live in the coordinator and client
//! crates and call the same functions.

use crate::aggregate::{AggregateError, Aggregator};
use crate::announce::{AnnouncedParticipant, AnnouncementError, RoundAnnouncement, collusion_policy, sign_consent};
use crate::encoding::{EncodingError, Weight, decode_weighted_mean};
use crate::encrypt::{EncryptError, encrypt_update};
use crate::envelope::{EnvelopeError, open_share_for, seal_share_with};
use crate::ids::{ParticipantId, RoundId};
use crate::journal::MemoryJournal;
use crate::keyholder::{DecryptError, DecryptionRequest, KeyHolder, combine};
use crate::keys::{NodeIdentity, RoundSecretKey};
use crate::mask::MaskSeed;
use crate::params::SecAggContext;
use crate::shamir::{ShamirError, share_round_key};
use rand::CryptoRng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Errors of a simulated round.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SimError {
    /// Encoding failed.
    #[error(transparent)]
    Encoding(#[from] EncodingError),
    /// Encryption failed.
    #[error(transparent)]
    Encrypt(#[from] EncryptError),
    /// Sharing failed.
    #[error(transparent)]
    Shamir(#[from] ShamirError),
    /// Envelope failed.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Aggregation failed.
    #[error(transparent)]
    Aggregate(#[from] AggregateError),
    /// Decryption failed.
    #[error(transparent)]
    Decrypt(#[from] DecryptError),
    /// The announcement or policy was refused.
    #[error(transparent)]
    Announcement(#[from] AnnouncementError),
    /// Inconsistent configuration.
    #[error("invalid simulation: {0}")]
    Config(&'static str),
}

/// Configuration of a simulated round.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Largest number of colluding clients assumed (c).
    pub max_colluders: usize,
    /// Decryption threshold t (`2t > n + c`).
    pub threshold: usize,
    /// Minimum participant set size enforced by key holders (`≥ c + 2`).
    pub min_participants: usize,
    /// Indices (0-based) of key holders that vanish after the upload phase.
    pub dropped_holders: Vec<usize>,
    /// Seal shares in signed envelopes (true in a real round; tests may skip it for speed).
    pub envelopes: bool,
    /// Federation id bound into envelopes.
    pub federation: String,
}

impl SimConfig {
    /// The policy of [`collusion_policy`]`(n, c)`, no dropouts, envelopes on.
    ///
    /// # Errors
    /// [`AnnouncementError::ImpossiblePolicy`] as [`collusion_policy`].
    pub fn new(n: usize, max_colluders: usize) -> Result<Self, AnnouncementError> {
        let (threshold, min_participants) = collusion_policy(n, max_colluders)?;
        Ok(Self {
            max_colluders,
            threshold,
            min_participants,
            dropped_holders: vec![],
            envelopes: true,
            federation: "sim".into(),
        })
    }
}

/// Wall-clock timings of the phases of a simulated round.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct RoundTimings {
    /// Round keys, Shamir sharing and envelopes, all clients.
    pub setup: Duration,
    /// Encryption, summed over clients (single-threaded).
    pub encrypt: Duration,
    /// Streaming aggregation of all bodies.
    pub aggregate: Duration,
    /// All partial decryptions plus combine and decode.
    pub decrypt: Duration,
}

/// Result of a simulated round.
#[derive(Clone, Debug)]
pub struct SecureRoundOutcome {
    /// Decoded integer sums `Σ m_i` (last coordinate: total encoded weight).
    pub sums: Vec<i64>,
    /// Decoded weighted mean of the model coordinates.
    pub mean: Vec<f64>,
    /// Upload size of one client in bytes.
    pub upload_bytes_per_client: usize,
    /// The announcement the round ran under.
    pub announcement: RoundAnnouncement,
    /// Phase timings.
    pub timings: RoundTimings,
}

/// Builds and validates the announcement of a simulated round over `identities` (ids 1..=n).
///
/// # Errors
/// [`SimError::Announcement`] if the policy of `config` is refused.
pub fn announce<R: CryptoRng + ?Sized>(
    ctx: &SecAggContext,
    identities: &[NodeIdentity],
    model_len: usize,
    config: &SimConfig,
    rng: &mut R,
) -> Result<RoundAnnouncement, SimError> {
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    let mut nonce = [0u8; 32];
    rng.fill_bytes(&mut nonce);
    let participants = identities
        .iter()
        .zip(1u32..)
        .map(|(id, i)| {
            Ok(AnnouncedParticipant {
                name: format!("client-{i}"),
                id: ParticipantId::new(i).ok_or(SimError::Config("id"))?,
                keys: id.public_keys(),
            })
        })
        .collect::<Result<Vec<_>, SimError>>()?;
    let a = RoundAnnouncement {
        federation: config.federation.clone(),
        round: RoundId(1),
        nonce,
        model_sha256: Sha256::digest(b"simulated model").into(),
        seed: MaskSeed(seed),
        params: ctx.params().clone(),
        threshold: config.threshold,
        min_participants: config.min_participants,
        max_colluders: config.max_colluders,
        reference_examples: 1.0,
        weight_cap: f64::MAX,
        model_len,
        participants,
    };
    a.validate()?;
    Ok(a)
}

/// Runs one full secure round over `updates` with FedAvg `weights`.
///
/// # Errors
/// [`SimError::Config`] for inconsistent input; any error of the underlying steps.
pub fn run_secure_round<R: CryptoRng + ?Sized>(
    ctx: &SecAggContext,
    updates: &[&[f32]],
    weights: &[f64],
    config: &SimConfig,
    rng: &mut R,
) -> Result<SecureRoundOutcome, SimError> {
    let n = updates.len();
    if n == 0 || weights.len() != n {
        return Err(SimError::Config("need one weight per update and at least one update"));
    }
    let p = updates[0].len();
    if updates.iter().any(|u| u.len() != p) {
        return Err(SimError::Config("updates differ in length"));
    }
    if config.dropped_holders.iter().any(|&d| d >= n) {
        return Err(SimError::Config("dropped holder index out of range"));
    }
    crate::encoding::check_headroom(ctx, n)?;
    let len = p + 1;

    // Setup: identities (long-term, not timed), announcement, round keys, shares, envelopes.
    let identities: Vec<NodeIdentity> = (0..n).map(|_| NodeIdentity::generate_with(rng)).collect();
    let announcement = announce(ctx, &identities, p, config, rng)?;
    let hash = announcement.hash();
    let (round, seed) = (announcement.round, announcement.seed);
    let ids = announcement.participant_ids();
    let consents: Vec<_> = identities.iter().zip(&ids).map(|(k, &id)| sign_consent(k, id, &hash)).collect();
    let mut holders: Vec<KeyHolder> =
        ids.iter().map(|&id| KeyHolder::new(ctx, &announcement, id)).collect::<Result<_, _>>()?;
    let mut journals = vec![MemoryJournal::new(); n];
    let t0 = Instant::now();
    let mut keys = Vec::with_capacity(n);
    for (i, &sender) in ids.iter().enumerate() {
        let key = RoundSecretKey::generate_with(ctx, rng);
        let contexts = announcement.share_contexts_from(sender);
        let shares = share_round_key(ctx, &key, config.threshold, &ids, rng)?;
        for (k, ((holder_id, share), (_, sc))) in shares.into_iter().zip(contexts).enumerate() {
            debug_assert_eq!(holder_id, sc.recipient);
            let share = if config.envelopes && k != i {
                let env = seal_share_with(&identities[i], &identities[k].public_keys(), &sc, &share, rng)?;
                open_share_for(ctx, &identities[k], &identities[i].public_keys(), &sc, &env)?
            } else {
                share
            };
            holders[k].receive_share(sender, share)?;
        }
        keys.push(key);
    }
    let setup = t0.elapsed();

    // Upload.
    let mut bodies = vec![vec![0u64; ctx.residues_len(len)]; n];
    let t0 = Instant::now();
    for i in 0..n {
        let w = Weight::new(ctx, weights[i])?;
        encrypt_update(&mut bodies[i], ctx, round, &seed, &keys[i], updates[i], w, rng)?;
    }
    let encrypt = t0.elapsed();
    drop(keys);

    // Aggregate.
    let t0 = Instant::now();
    let mut agg = Aggregator::new(ctx, len);
    for (i, b) in bodies.iter().enumerate() {
        agg.add_client(ids[i], b)?;
    }
    let aggregate_body = agg.finish()?;
    let aggregate = t0.elapsed();

    // Decrypt with the first t holders still online.
    let t0 = Instant::now();
    let online: Vec<usize> = (0..n).filter(|k| !config.dropped_holders.contains(k)).collect();
    if online.len() < config.threshold {
        return Err(DecryptError::NotEnoughPartials { got: online.len(), threshold: config.threshold }.into());
    }
    let responders: Vec<usize> = online[..config.threshold].to_vec();
    let request = DecryptionRequest {
        round,
        announcement: hash,
        participants: aggregate_body.participants().to_vec(),
        consents: consents.clone(),
        responders: responders.iter().map(|&k| ids[k]).collect(),
        len,
    };
    let partials = responders
        .iter()
        .map(|&k| holders[k].partial_decrypt_with(&request, &mut journals[k], rng))
        .collect::<Result<Vec<_>, _>>()?;
    let sums = combine(ctx, &request, config.threshold, &aggregate_body, &partials)?;
    let mean = decode_weighted_mean(&sums)?;
    let decrypt = t0.elapsed();

    Ok(SecureRoundOutcome {
        sums,
        mean,
        upload_bytes_per_client: ctx.residues_len(len) * 8,
        announcement,
        timings: RoundTimings { setup, encrypt, aggregate, decrypt },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::AggregateBody;
    use crate::announce::{AnnouncementHash, Consent};
    use crate::encoding::allocate_and_encode_weighted_update;
    use crate::envelope::open_share;
    use crate::journal::{AnswerJournal, JournalError};
    use crate::keyholder::{PartialDecryption, combine_unchecked};
    use crate::params::SecAggParams;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    fn expected_sums(ctx: &SecAggContext, updates: &[Vec<f32>], weights: &[f64]) -> Vec<i64> {
        let mut acc = vec![0i64; updates[0].len() + 1];
        for (u, &w) in updates.iter().zip(weights) {
            let e = allocate_and_encode_weighted_update(ctx, u, Weight::new(ctx, w).unwrap()).unwrap();
            acc.iter_mut().zip(e).for_each(|(a, x)| *a += x);
        }
        acc
    }

    /// `n` random updates of `len` coordinates with random weights, a random colluder count and random key-holder
    /// dropouts down to the threshold, seeded by `seed`: the decoded sums equal the plaintext sums of the
    /// encodings.
    fn round_trip(ctx: &SecAggContext, n: usize, len: usize, seed: u64) -> Result<(), TestCaseError> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let updates: Vec<Vec<f32>> =
            (0..n).map(|_| (0..len).map(|_| rng.random_range(-6.0f32..6.0)).collect()).collect();
        let weights: Vec<f64> = (0..n).map(|_| rng.random_range(0.0..16.0)).collect();
        let c = rng.random_range(0..=(n - 2) / 2);
        let mut cfg = SimConfig::new(n, c).unwrap();
        cfg.envelopes = false;
        let drops = rng.random_range(0..=n - cfg.threshold);
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        cfg.dropped_holders = order[..drops].to_vec();
        let refs: Vec<&[f32]> = updates.iter().map(|u| u.as_slice()).collect();
        let out = run_secure_round(ctx, &refs, &weights, &cfg, &mut rng).unwrap();
        prop_assert_eq!(out.sums, expected_sums(ctx, &updates, &weights));
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// 2..50 clients, random updates (beyond ±R too) and weights, a random collusion bound,
        /// random holder dropouts down to exactly t: the decoded sums equal the plaintext sums of
        /// the encodings.
        #[test]
        fn round_trip_with_dropouts(n in 2usize..=50, len in 1usize..40, seed: u64) {
            let ctx = SecAggParams::toy_insecure(16).build().unwrap(); // toy parameters, not secure
            round_trip(&ctx, n, len, seed)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3))]
        /// The same at the production parameters (N = 8192, three primes, 3 slots), with vectors
        /// spanning up to three chunks (24576 coordinates each) and a truncated last chunk.
        #[test]
        fn round_trip_with_dropouts_production(n in 2usize..=12, len in 1usize..60_000, seed: u64) {
            let ctx = SecAggParams::default().build().unwrap();
            round_trip(&ctx, n, len, seed)?;
        }
    }

    /// Production parameters, n = 7, c = 1 (t = 5), two holders drop after the upload: still
    /// decodes, through signed envelopes; the weighted mean is within one quantization step.
    #[test]
    fn seven_clients_two_holders_drop() {
        let ctx = SecAggParams::default().build().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(42);
        let p = 5000;
        let updates: Vec<Vec<f32>> = (0..7).map(|_| (0..p).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect();
        let weights = [1.0, 2.0, 3.0, 0.5, 4.0, 1.5, 2.5];
        let mut cfg = SimConfig::new(7, 1).unwrap();
        assert_eq!((cfg.threshold, cfg.min_participants), (5, 3));
        cfg.dropped_holders = vec![0, 3];
        let refs: Vec<&[f32]> = updates.iter().map(|u| u.as_slice()).collect();
        let out = run_secure_round(&ctx, &refs, &weights, &cfg, &mut rng).unwrap();
        assert_eq!(out.sums, expected_sums(&ctx, &updates, &weights));
        let total: f64 = weights.iter().sum();
        for c in 0..p {
            let exact: f64 = updates.iter().zip(&weights).map(|(u, w)| f64::from(u[c]) * w).sum::<f64>() / total;
            assert!((out.mean[c] - exact).abs() <= ctx.quantization_step(), "coord {c}");
        }
        assert_eq!(out.upload_bytes_per_client, (p + 1) * 8);
        cfg.dropped_holders = vec![0, 1, 3];
        assert!(matches!(
            run_secure_round(&ctx, &refs, &weights, &cfg, &mut rng),
            Err(SimError::Decrypt(DecryptError::NotEnoughPartials { got: 4, threshold: 5 }))
        ));
    }

    /// A failing durable store: the holder must release nothing.
    struct BrokenJournal;
    impl AnswerJournal for BrokenJournal {
        fn record_answer(&mut self, _: RoundId, _: &AnnouncementHash) -> Result<(), JournalError> {
            Err(JournalError::Storage("disk full".into()))
        }
    }

    struct Fixture {
        ctx: SecAggContext,
        announcement: RoundAnnouncement,
        hash: AnnouncementHash,
        identities: Vec<NodeIdentity>,
        ids: Vec<ParticipantId>,
        holders: Vec<KeyHolder>,
        journals: Vec<MemoryJournal>,
        bodies: Vec<Vec<u64>>,
        encodings: Vec<Vec<i64>>,
        len: usize,
    }

    impl Fixture {
        /// The consents of the members `set` (indices).
        fn consents(&self, set: &[usize]) -> Vec<Consent> {
            set.iter().map(|&i| sign_consent(&self.identities[i], self.ids[i], &self.hash)).collect()
        }

        fn request(&self, set: &[usize], responders: &[usize]) -> DecryptionRequest {
            DecryptionRequest {
                round: self.announcement.round,
                announcement: self.hash,
                participants: set.iter().map(|&i| self.ids[i]).collect(),
                consents: self.consents(set),
                responders: responders.iter().map(|&i| self.ids[i]).collect(),
                len: self.len,
            }
        }

        fn aggregate(&self, set: &[usize]) -> AggregateBody {
            let mut agg = Aggregator::new(&self.ctx, self.len);
            for &i in set {
                agg.add_client(self.ids[i], &self.bodies[i]).unwrap();
            }
            agg.finish().unwrap()
        }

        fn expected(&self, set: &[usize]) -> Vec<i64> {
            let mut acc = vec![0i64; self.len];
            for &i in set {
                acc.iter_mut().zip(&self.encodings[i]).for_each(|(a, x)| *a += x);
            }
            acc
        }

        /// Holder `k` answers `request` with its own journal.
        fn answer(&mut self, k: usize, request: &DecryptionRequest) -> Result<PartialDecryption, DecryptError> {
            self.holders[k].partial_decrypt(request, &mut self.journals[k])
        }

        /// A freshly built holder `k` (a restart, or a colluder's second instance) holding the
        /// same shares.
        fn rebuilt_holder(&self, k: usize, shares: &[(ParticipantId, crate::shamir::KeyShare)]) -> KeyHolder {
            let mut h = KeyHolder::new(&self.ctx, &self.announcement, self.ids[k]).unwrap();
            for (sender, share) in shares {
                h.receive_share(*sender, share.clone()).unwrap();
            }
            h
        }
    }

    /// `n` clients under an announcement with the given (t, min, c); also returns every holder's
    /// received shares so tests can rebuild holders.
    #[allow(clippy::type_complexity)]
    fn fixture(
        n: usize,
        t: usize,
        min: usize,
        c: usize,
    ) -> (Fixture, Vec<Vec<(ParticipantId, crate::shamir::KeyShare)>>) {
        let ctx = SecAggParams::toy_insecure(64).build().unwrap(); // toy parameters, not secure
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let len = 100;
        let identities: Vec<NodeIdentity> = (0..n).map(|_| NodeIdentity::generate_with(&mut rng)).collect();
        let cfg = SimConfig {
            max_colluders: c,
            threshold: t,
            min_participants: min,
            dropped_holders: vec![],
            envelopes: false,
            federation: "fx".into(),
        };
        let announcement = announce(&ctx, &identities, len - 1, &cfg, &mut rng).unwrap();
        let hash = announcement.hash();
        let ids = announcement.participant_ids();
        let mut holders: Vec<KeyHolder> =
            ids.iter().map(|&id| KeyHolder::new(&ctx, &announcement, id).unwrap()).collect();
        let mut held = vec![vec![]; n];
        let (mut bodies, mut encodings) = (vec![], vec![]);
        for &sender in &ids {
            let key = RoundSecretKey::generate_with(&ctx, &mut rng);
            for (k, (_, share)) in share_round_key(&ctx, &key, t, &ids, &mut rng).unwrap().into_iter().enumerate() {
                held[k].push((sender, share.clone()));
                holders[k].receive_share(sender, share).unwrap();
            }
            let u: Vec<f32> = (0..len - 1).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let body = crate::encrypt::allocate_and_encrypt_update(
                &ctx,
                announcement.round,
                &announcement.seed,
                &key,
                &u,
                Weight::one(),
                &mut rng,
            )
            .unwrap();
            bodies.push(body);
            encodings.push(allocate_and_encode_weighted_update(&ctx, &u, Weight::one()).unwrap());
        }
        let f = Fixture {
            ctx,
            announcement,
            hash,
            identities,
            ids,
            holders,
            journals: vec![MemoryJournal::new(); n],
            bodies,
            encodings,
            len,
        };
        (f, held)
    }

    #[test]
    fn fewer_than_t_partials_cannot_decrypt() {
        let (mut f, _) = fixture(5, 3, 2, 0);
        let all = [0, 1, 2, 3, 4];
        let request = f.request(&all, &[0, 1, 2]);
        let partials: Vec<PartialDecryption> = (0..3).map(|k| f.answer(k, &request).unwrap()).collect();
        let agg = f.aggregate(&all);
        assert_eq!(combine(&f.ctx, &request, 3, &agg, &partials).unwrap(), f.expected(&all));
        // t − 1 partials: typed refusal ...
        assert_eq!(
            combine(&f.ctx, &request, 3, &agg, &partials[..2]),
            Err(DecryptError::NotEnoughPartials { got: 2, threshold: 3 })
        );
        // ... and forcing the arithmetic anyway yields garbage, not the sum.
        assert!(matches!(combine_unchecked(&f.ctx, f.len, agg.sum(), &partials[..2]), Err(DecryptError::Garbled(_))));
        // A request naming only t − 1 responders is refused by the holders themselves.
        let small = f.request(&all, &[3, 4]);
        assert_eq!(f.answer(3, &small), Err(DecryptError::NotEnoughPartials { got: 2, threshold: 3 }));
        // Partials for another responder set do not combine.
        let wrong = f.request(&all, &[0, 1, 4]);
        assert!(matches!(combine(&f.ctx, &wrong, 3, &agg, &partials), Err(DecryptError::ResponderMismatch(_))));
    }

    /// One test per refusal of a key holder, each with its typed error; none consumes the answer.
    #[test]
    fn holder_refusals() {
        let (mut f, _) = fixture(5, 4, 3, 1);
        let all = [0, 1, 2, 3, 4];
        let request = f.request(&all, &[0, 1, 2, 3]);
        let ids = f.ids.clone();
        let stranger = ParticipantId::new(1000).unwrap();
        let check = |f: &mut Fixture, r: DecryptionRequest, e: DecryptError| {
            assert_eq!(f.answer(0, &r), Err(e));
        };
        let hash = f.hash;
        check(
            &mut f,
            DecryptionRequest { round: RoundId(6), ..request.clone() },
            DecryptError::WrongRound { expected: RoundId(1), got: RoundId(6) },
        );
        // A decryption request naming another announcement.
        let other = AnnouncementHash([0xee; 32]);
        check(
            &mut f,
            DecryptionRequest { announcement: other, ..request.clone() },
            DecryptError::WrongAnnouncement { expected: hash, got: other },
        );
        check(
            &mut f,
            DecryptionRequest { len: 7, ..request.clone() },
            DecryptError::LengthMismatch { expected: 100, got: 7 },
        );
        check(
            &mut f,
            DecryptionRequest { participants: vec![], consents: vec![], ..request.clone() },
            DecryptError::EmptyParticipantSet,
        );
        // S below min_participants (3 = c + 2).
        let r = f.request(&[0, 1], &[0, 1, 2, 3]);
        check(&mut f, r, DecryptError::TooFewParticipants { got: 2, min: 3 });
        // S containing a non-participant.
        let mut r = f.request(&[0, 1, 2], &[0, 1, 2, 3]);
        r.participants.push(stranger);
        check(&mut f, r, DecryptError::NotAParticipant(stranger));
        // S containing a non-signer (missing consent).
        let mut r = request.clone();
        r.consents.retain(|c| c.participant != ids[3]);
        check(&mut f, r, DecryptError::MissingConsent(ids[3]));
        // A forged consent: signed by another participant's key.
        let mut r = request.clone();
        r.consents[3] = sign_consent(&f.identities[0], ids[3], &f.hash);
        check(&mut f, r, DecryptError::BadConsent(ids[3]));
        // A consent over another announcement.
        let mut r = request.clone();
        r.consents[2] = sign_consent(&f.identities[2], ids[2], &other);
        check(&mut f, r, DecryptError::BadConsent(ids[2]));
        // A consent from a non-member of S, and a duplicate consent.
        let mut r = f.request(&[0, 1, 2], &[0, 1, 2, 3]);
        r.consents.push(sign_consent(&f.identities[4], ids[4], &f.hash));
        check(&mut f, r, DecryptError::UnexpectedConsent(ids[4]));
        let mut r = request.clone();
        r.consents.push(r.consents[0]);
        check(&mut f, r, DecryptError::UnexpectedConsent(ids[0]));
        check(
            &mut f,
            DecryptionRequest { participants: vec![ids[0], ids[0], ids[1]], ..request.clone() },
            DecryptError::Duplicate(ids[0]),
        );
        let r = f.request(&all, &[1, 2, 3, 4]);
        check(&mut f, r, DecryptError::NotAResponder(ids[0]));
        let mut r = request.clone();
        r.responders.push(stranger);
        check(&mut f, r, DecryptError::NotAParticipant(stranger));
        let r = f.request(&all, &[0, 1, 2]);
        check(&mut f, r, DecryptError::NotEnoughPartials { got: 3, threshold: 4 });
        // A storage failure of the journal releases nothing and does not mark the holder.
        assert_eq!(
            f.holders[0].partial_decrypt(&request, &mut BrokenJournal),
            Err(DecryptError::Journal(JournalError::Storage("disk full".into())))
        );
        // Refusals above did not consume the answer; the first valid request does.
        assert!(!f.holders[0].has_answered());
        assert_eq!(f.journals[0].answered(RoundId(1)), None);
        f.answer(0, &request).unwrap();
        assert_eq!(f.journals[0].answered(RoundId(1)), Some(f.hash));
        assert_eq!(f.answer(0, &request), Err(DecryptError::AlreadyAnswered));
        let subset = f.request(&[0, 1, 2, 3], &[0, 1, 2, 3]);
        assert_eq!(f.answer(0, &subset), Err(DecryptError::AlreadyAnswered));
        // Shares: from strangers, duplicates, wrong lengths.
        let moduli = f.ctx.moduli().to_vec();
        let share = |v: Vec<u64>| crate::shamir::KeyShare::from_values(v, &moduli).unwrap();
        assert_eq!(f.holders[0].receive_share(ids[0], share(vec![0; 192])), Err(DecryptError::DuplicateShare(ids[0])));
        assert_eq!(
            f.holders[0].receive_share(stranger, share(vec![0; 192])),
            Err(DecryptError::NotAParticipant(stranger))
        );
        let mut h = KeyHolder::new(&f.ctx, &f.announcement, ids[1]).unwrap();
        assert!(matches!(h.receive_share(ids[0], share(vec![0; 3])), Err(DecryptError::BadShareLength { .. })));
        // A holder needs a share from every member of S.
        let mut j = MemoryJournal::new();
        assert_eq!(h.partial_decrypt(&request, &mut j), Err(DecryptError::MissingShare(ids[0])));
        // Holders refuse to be built for invalid announcements, other parameters, or strangers.
        assert_eq!(
            KeyHolder::new(&f.ctx, &f.announcement, stranger).unwrap_err(),
            DecryptError::NotAParticipant(stranger)
        );
        let other_ctx = SecAggParams::toy_insecure(32).build().unwrap();
        assert_eq!(KeyHolder::new(&other_ctx, &f.announcement, ids[0]).unwrap_err(), DecryptError::ParamsMismatch);
        let mut weak = f.announcement.clone();
        weak.threshold = 3;
        assert!(matches!(KeyHolder::new(&f.ctx, &weak, ids[0]), Err(DecryptError::Announcement(_))));
    }

    /// A restarted key holder (fresh instance, same announcement, same durable journal) refuses
    /// a second request of the round; without the journal it would answer.
    #[test]
    fn restarted_holder_does_not_answer_twice() {
        let (mut f, held) = fixture(5, 4, 3, 1);
        let first = f.request(&[0, 1, 2, 3, 4], &[0, 1, 2, 3]);
        f.answer(2, &first).unwrap();
        let second = f.request(&[0, 1, 2, 3], &[0, 1, 2, 4]);
        let mut restarted = f.rebuilt_holder(2, &held[2]);
        assert!(!restarted.has_answered());
        assert_eq!(restarted.partial_decrypt(&second, &mut f.journals[2]), Err(DecryptError::AlreadyAnswered));
        // A journal keyed by round refuses another announcement reusing the round id, too.
        assert_eq!(
            f.journals[2].record_answer(RoundId(1), &AnnouncementHash([1; 32])),
            Err(JournalError::AlreadyAnswered)
        );
        // The same holder with a fresh (lost) journal would answer: the journal is what stops it.
        assert!(restarted.partial_decrypt(&second, &mut MemoryJournal::new()).is_ok());
    }

    /// An envelope sealed under announcement A is refused under announcement B, even though B
    /// reuses A's round id (a replay into a restarted round).
    #[test]
    fn envelope_replayed_from_another_announcement_is_refused() {
        let (f, held) = fixture(3, 2, 2, 0);
        let mut b = f.announcement.clone();
        b.nonce[0] ^= 1; // a new announcement of the same round id
        assert_eq!(b.round, f.announcement.round);
        let (s, r) = (f.ids[0], f.ids[1]);
        let ctx_a = f.announcement.share_context(s, r);
        let ctx_b = b.share_context(s, r);
        assert_ne!(ctx_a.announcement, ctx_b.announcement);
        let share = &held[1][0].1;
        let env =
            seal_share_with(&f.identities[0], &f.identities[1].public_keys(), &ctx_a, share, &mut rand::rng()).unwrap();
        let open = |expected: &crate::envelope::ShareContext, env: &crate::envelope::SealedShare| {
            open_share(64, f.ctx.moduli(), &f.identities[1], &f.identities[0].public_keys(), expected, env)
        };
        assert_eq!(open(&ctx_a, &env).unwrap(), *share);
        assert_eq!(
            open(&ctx_b, &env),
            Err(EnvelopeError::WrongAnnouncement { expected: ctx_b.announcement, got: ctx_a.announcement })
        );
        let mut relabelled = env.clone();
        relabelled.context = ctx_b.clone();
        assert_eq!(open(&ctx_b, &relabelled), Err(EnvelopeError::BadSignature));
    }

    /// The split attack end to end. With n = 5, t = 3 (the old majority rule, announced with
    /// c = 0) and one colluding holder that ignores its journal, the coordinator decrypts two
    /// different sets and subtracts: it learns one honest update. Under `collusion_policy(5, 1)`
    /// (t = 4) the same attack is refused by an honest holder in both responder sets.
    #[test]
    fn split_with_one_colluder() {
        // Old rule: T1 = {0, 1, 2}, T2 = {2, 3, 4}; holder 2 colludes.
        let (mut f, held) = fixture(5, 3, 2, 0);
        let s1 = [0, 1, 2, 3, 4];
        let s2 = [1, 2, 3, 4]; // everyone but victim 0
        let (r1, r2) = (f.request(&s1, &[0, 1, 2]), f.request(&s2, &[2, 3, 4]));
        let p1: Vec<_> = [0, 1, 2].iter().map(|&k| f.answer(k, &r1).unwrap()).collect();
        let mut colluder = f.rebuilt_holder(2, &held[2]);
        let mut p2: Vec<_> = [3, 4].iter().map(|&k| f.answer(k, &r2).unwrap()).collect();
        p2.push(colluder.partial_decrypt(&r2, &mut MemoryJournal::new()).unwrap());
        let sum1 = combine(&f.ctx, &r1, 3, &f.aggregate(&s1), &p1).unwrap();
        let sum2 = combine(&f.ctx, &r2, 3, &f.aggregate(&s2), &p2).unwrap();
        let victim: Vec<i64> = sum1.iter().zip(&sum2).map(|(a, b)| a - b).collect();
        assert_eq!(victim, f.encodings[0], "the split reveals client 0's update");

        // collusion_policy(5, 1) = (4, 3): every two responder sets of 4 share >= 3 holders, so
        // at least one honest holder would have to answer twice.
        let (t, min) = collusion_policy(5, 1).unwrap();
        let (mut f, held) = fixture(5, t, min, 1);
        let (r1, r2) = (f.request(&s1, &[0, 1, 2, 3]), f.request(&s2, &[1, 2, 3, 4]));
        for k in 0..4 {
            f.answer(k, &r1).unwrap();
        }
        let mut colluder = f.rebuilt_holder(2, &held[2]);
        assert!(colluder.partial_decrypt(&r2, &mut MemoryJournal::new()).is_ok());
        assert_eq!(f.answer(4, &r2).map(|_| ()), Ok(()));
        for k in [1, 3] {
            assert_eq!(f.answer(k, &r2), Err(DecryptError::AlreadyAnswered), "honest holder {k}");
        }
    }

    #[test]
    fn combine_rejects_mismatched_inputs() {
        let (mut f, _) = fixture(3, 2, 2, 0);
        let all = [0, 1, 2];
        let request = f.request(&all, &[0, 1]);
        let mut partials: Vec<PartialDecryption> = (0..2).map(|k| f.answer(k, &request).unwrap()).collect();
        let agg = f.aggregate(&all);
        assert_eq!(combine(&f.ctx, &request, 2, &agg, &partials).unwrap(), f.expected(&all));
        let other = f.request(&[0, 1], &[0, 1]);
        assert_eq!(combine(&f.ctx, &other, 2, &agg, &partials), Err(DecryptError::ParticipantSetMismatch));
        let mut wrong = partials.clone();
        wrong[0].announcement = AnnouncementHash([3; 32]);
        assert!(matches!(combine(&f.ctx, &request, 2, &agg, &wrong), Err(DecryptError::WrongAnnouncement { .. })));
        partials[1].values.pop();
        assert!(matches!(combine(&f.ctx, &request, 2, &agg, &partials), Err(DecryptError::LengthMismatch { .. })));
        partials[1].values.push(f.ctx.moduli()[0]);
        assert!(matches!(combine(&f.ctx, &request, 2, &agg, &partials), Err(DecryptError::OutOfRange(_))));
        partials[1].round = RoundId(4);
        assert!(matches!(combine(&f.ctx, &request, 2, &agg, &partials), Err(DecryptError::WrongRound { .. })));
    }
}

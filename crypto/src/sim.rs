//! A complete secure-aggregation round in memory: key generation, Shamir sharing through sealed
//! envelopes, encryption, streaming aggregation, threshold decryption with dropouts, decoding.
//! Used by benchmarks and tests; the real protocol state machines live in the coordinator and
//! client crates and call the same functions.

use crate::aggregate::{AggregateError, Aggregator};
use crate::encoding::{EncodingError, Weight, decode_weighted_mean};
use crate::encrypt::{EncryptError, encrypt_update};
use crate::envelope::{EnvelopeError, ShareContext, open_share_for, seal_share_with};
use crate::ids::{ParticipantId, RoundId};
use crate::keyholder::{DecryptError, DecryptionRequest, KeyHolder, combine};
use crate::keys::{NodeIdentity, RoundSecretKey};
use crate::mask::MaskSeed;
use crate::params::SecAggContext;
use crate::shamir::{ShamirError, share_round_key};
use rand::CryptoRng;
use serde::Serialize;
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
    /// Inconsistent configuration.
    #[error("invalid simulation: {0}")]
    Config(&'static str),
}

/// Configuration of a simulated round.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Decryption threshold t (must exceed half the clients).
    pub threshold: usize,
    /// Minimum participant set size enforced by key holders.
    pub min_participants: usize,
    /// Indices (0-based) of key holders that vanish after the upload phase.
    pub dropped_holders: Vec<usize>,
    /// Seal shares in signed envelopes (true in a real round; tests may skip it for speed).
    pub envelopes: bool,
    /// Federation id bound into envelopes.
    pub federation: String,
}

impl SimConfig {
    /// `t = ⌊n/2⌋ + 1`, `min_participants = min(3, n)`, no dropouts, envelopes on.
    pub fn majority(n: usize) -> Self {
        Self {
            threshold: n / 2 + 1,
            min_participants: n.min(3),
            dropped_holders: vec![],
            envelopes: true,
            federation: "sim".into(),
        }
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
    /// Upload size of one client in bytes (8 per coordinate).
    pub upload_bytes_per_client: usize,
    /// Phase timings.
    pub timings: RoundTimings,
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
        return Err(SimError::Config(
            "need one weight per update and at least one update",
        ));
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
    let round = RoundId(1);
    let mut seed_bytes = [0u8; 32];
    rng.fill_bytes(&mut seed_bytes);
    let seed = MaskSeed(seed_bytes);
    let q = ctx.modulus();
    let ids: Vec<ParticipantId> = (1..=n as u32)
        .map(|i| ParticipantId::new(i).ok_or(SimError::Config("id")))
        .collect::<Result<_, _>>()?;

    // Setup: identities (long-term, not timed), round keys, shares, envelopes.
    let identities: Vec<NodeIdentity> = (0..n).map(|_| NodeIdentity::generate_with(rng)).collect();
    let mut holders: Vec<KeyHolder> = ids
        .iter()
        .map(|&id| {
            KeyHolder::new(
                ctx,
                round,
                seed,
                id,
                config.threshold,
                config.min_participants,
                len,
            )
        })
        .collect::<Result<_, _>>()?;
    let t0 = Instant::now();
    let mut keys = Vec::with_capacity(n);
    for (i, &sender) in ids.iter().enumerate() {
        let key = RoundSecretKey::generate_with(ctx, rng);
        for (k, (holder_id, share)) in share_round_key(q, &key, config.threshold, &ids, rng)?
            .into_iter()
            .enumerate()
        {
            let share = if config.envelopes && k != i {
                let sc = ShareContext {
                    federation: config.federation.clone(),
                    round,
                    sender,
                    recipient: holder_id,
                };
                let env = seal_share_with(
                    &identities[i],
                    &identities[k].public_keys(),
                    &sc,
                    &share,
                    rng,
                )?;
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
    let mut bodies = vec![vec![0u64; len]; n];
    let t0 = Instant::now();
    for i in 0..n {
        let w = Weight::new(ctx, weights[i])?;
        encrypt_update(
            &mut bodies[i],
            ctx,
            round,
            &seed,
            &keys[i],
            updates[i],
            w,
            rng,
        )?;
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
    let online: Vec<usize> = (0..n)
        .filter(|k| !config.dropped_holders.contains(k))
        .collect();
    if online.len() < config.threshold {
        return Err(DecryptError::NotEnoughPartials {
            got: online.len(),
            threshold: config.threshold,
        }
        .into());
    }
    let responders: Vec<usize> = online[..config.threshold].to_vec();
    let request = DecryptionRequest {
        round,
        participants: aggregate_body.participants().to_vec(),
        responders: responders.iter().map(|&k| ids[k]).collect(),
        len,
    };
    let partials = responders
        .iter()
        .map(|&k| holders[k].partial_decrypt_with(&request, rng))
        .collect::<Result<Vec<_>, _>>()?;
    let sums = combine(ctx, &request, config.threshold, &aggregate_body, &partials)?;
    let mean = decode_weighted_mean(&sums)?;
    let decrypt = t0.elapsed();

    Ok(SecureRoundOutcome {
        sums,
        mean,
        upload_bytes_per_client: len * 8,
        timings: RoundTimings {
            setup,
            encrypt,
            aggregate,
            decrypt,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::allocate_and_encode_weighted_update;
    use crate::keyholder::{PartialDecryption, combine_unchecked};
    use crate::params::SecAggParams;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    fn expected_sums(ctx: &SecAggContext, updates: &[Vec<f32>], weights: &[f64]) -> Vec<i64> {
        let mut acc = vec![0i64; updates[0].len() + 1];
        for (u, &w) in updates.iter().zip(weights) {
            let e =
                allocate_and_encode_weighted_update(ctx, u, Weight::new(ctx, w).unwrap()).unwrap();
            acc.iter_mut().zip(e).for_each(|(a, x)| *a += x);
        }
        acc
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// 2..50 clients, random updates (beyond ±R too) and weights, random holder dropouts
        /// down to exactly t: the decoded sums equal the plaintext sums of the encodings.
        #[test]
        fn round_trip_with_dropouts(n in 2usize..=50, len in 1usize..40, seed: u64) {
            let ctx = SecAggParams::toy_insecure(16).build().unwrap(); // toy parameters, not secure
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let updates: Vec<Vec<f32>> = (0..n).map(|_| (0..len).map(|_| rng.random_range(-6.0f32..6.0)).collect()).collect();
            let weights: Vec<f64> = (0..n).map(|_| rng.random_range(0.0..16.0)).collect();
            let mut cfg = SimConfig::majority(n);
            cfg.envelopes = false;
            let drops = rng.random_range(0..=n - cfg.threshold);
            let mut order: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() { order.swap(i, rng.random_range(0..=i)); }
            cfg.dropped_holders = order[..drops].to_vec();
            let refs: Vec<&[f32]> = updates.iter().map(|u| u.as_slice()).collect();
            let out = run_secure_round(&ctx, &refs, &weights, &cfg, &mut rng).unwrap();
            prop_assert_eq!(out.sums, expected_sums(&ctx, &updates, &weights));
        }
    }

    /// Production parameters, n = 5, t = 3, two holders drop after the upload: still decodes,
    /// through signed envelopes; the weighted mean is within one quantization step.
    #[test]
    fn five_clients_two_holders_drop() {
        let ctx = SecAggParams::default().build().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(42);
        let p = 5000;
        let updates: Vec<Vec<f32>> = (0..5)
            .map(|_| (0..p).map(|_| rng.random_range(-1.0f32..1.0)).collect())
            .collect();
        let weights = [1.0, 2.0, 3.0, 0.5, 4.0];
        let mut cfg = SimConfig::majority(5);
        assert_eq!(cfg.threshold, 3);
        cfg.dropped_holders = vec![0, 3];
        let refs: Vec<&[f32]> = updates.iter().map(|u| u.as_slice()).collect();
        let out = run_secure_round(&ctx, &refs, &weights, &cfg, &mut rng).unwrap();
        assert_eq!(out.sums, expected_sums(&ctx, &updates, &weights));
        let total: f64 = weights.iter().sum();
        for c in 0..p {
            let exact: f64 = updates
                .iter()
                .zip(&weights)
                .map(|(u, w)| f64::from(u[c]) * w)
                .sum::<f64>()
                / total;
            assert!(
                (out.mean[c] - exact).abs() <= ctx.quantization_step(),
                "coord {c}"
            );
        }
        assert_eq!(out.upload_bytes_per_client, (p + 1) * 8);
        cfg.dropped_holders = vec![0, 1, 3];
        assert!(matches!(
            run_secure_round(&ctx, &refs, &weights, &cfg, &mut rng),
            Err(SimError::Decrypt(DecryptError::NotEnoughPartials {
                got: 2,
                threshold: 3
            }))
        ));
    }

    struct Fixture {
        ctx: SecAggContext,
        ids: Vec<ParticipantId>,
        holders: Vec<KeyHolder>,
        agg: crate::aggregate::AggregateBody,
        expected: Vec<i64>,
        len: usize,
    }

    fn fixture(n: usize, t: usize, min: usize) -> Fixture {
        let ctx = SecAggParams::toy_insecure(64).build().unwrap(); // toy parameters, not secure
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let len = 100;
        let ids: Vec<ParticipantId> = (1..=n as u32)
            .map(|i| ParticipantId::new(i * 3).unwrap())
            .collect();
        let seed = MaskSeed([9; 32]);
        let mut holders: Vec<KeyHolder> = ids
            .iter()
            .map(|&id| KeyHolder::new(&ctx, RoundId(5), seed, id, t, min, len).unwrap())
            .collect();
        let mut agg = Aggregator::new(&ctx, len);
        let mut updates = vec![];
        for &sender in &ids {
            let key = RoundSecretKey::generate_with(&ctx, &mut rng);
            for (k, (_, share)) in share_round_key(ctx.modulus(), &key, t, &ids, &mut rng)
                .unwrap()
                .into_iter()
                .enumerate()
            {
                holders[k].receive_share(sender, share).unwrap();
            }
            let u: Vec<f32> = (0..len - 1)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let body = crate::encrypt::allocate_and_encrypt_update(
                &ctx,
                RoundId(5),
                &seed,
                &key,
                &u,
                Weight::one(),
                &mut rng,
            )
            .unwrap();
            agg.add_client(sender, &body).unwrap();
            updates.push(u);
        }
        let expected = expected_sums(&ctx, &updates, &vec![1.0; n]);
        Fixture {
            ctx,
            ids,
            holders,
            agg: agg.finish().unwrap(),
            expected,
            len,
        }
    }

    #[test]
    fn fewer_than_t_partials_cannot_decrypt() {
        let mut f = fixture(5, 3, 3);
        let request = DecryptionRequest {
            round: RoundId(5),
            participants: f.ids.clone(),
            responders: f.ids[..3].to_vec(),
            len: f.len,
        };
        let partials: Vec<PartialDecryption> = f.holders[..3]
            .iter_mut()
            .map(|h| h.partial_decrypt(&request).unwrap())
            .collect();
        assert_eq!(
            combine(&f.ctx, &request, 3, &f.agg, &partials).unwrap(),
            f.expected
        );
        // t − 1 partials: typed refusal ...
        assert_eq!(
            combine(&f.ctx, &request, 3, &f.agg, &partials[..2]),
            Err(DecryptError::NotEnoughPartials {
                got: 2,
                threshold: 3
            })
        );
        // ... and forcing the arithmetic anyway yields garbage, not the sum.
        assert!(matches!(
            combine_unchecked(&f.ctx, f.agg.sum(), &partials[..2]),
            Err(DecryptError::Garbled(_))
        ));
        // A request naming only t − 1 responders is refused by the holders themselves.
        let small = DecryptionRequest {
            responders: f.ids[3..].to_vec(),
            ..request.clone()
        };
        assert_eq!(
            f.holders[3].partial_decrypt(&small),
            Err(DecryptError::NotEnoughPartials {
                got: 2,
                threshold: 3
            })
        );
        // Partials for another responder set do not combine.
        let wrong = DecryptionRequest {
            responders: vec![f.ids[0], f.ids[1], f.ids[4]],
            ..request.clone()
        };
        assert!(matches!(
            combine(&f.ctx, &wrong, 3, &f.agg, &partials),
            Err(DecryptError::ResponderMismatch(_))
        ));
    }

    #[test]
    fn holder_refusals() {
        let mut f = fixture(5, 3, 3);
        let ids = f.ids.clone();
        let request = DecryptionRequest {
            round: RoundId(5),
            participants: ids.clone(),
            responders: ids[..3].to_vec(),
            len: f.len,
        };
        let h = &mut f.holders[0];
        assert_eq!(
            h.partial_decrypt(&DecryptionRequest {
                round: RoundId(6),
                ..request.clone()
            }),
            Err(DecryptError::WrongRound {
                expected: RoundId(5),
                got: RoundId(6)
            })
        );
        assert_eq!(
            h.partial_decrypt(&DecryptionRequest {
                participants: ids[..2].to_vec(),
                ..request.clone()
            }),
            Err(DecryptError::TooFewParticipants { got: 2, min: 3 })
        );
        let stranger = ParticipantId::new(1000).unwrap();
        assert_eq!(
            h.partial_decrypt(&DecryptionRequest {
                participants: vec![ids[0], ids[1], stranger],
                ..request.clone()
            }),
            Err(DecryptError::MissingShare(stranger))
        );
        assert_eq!(
            h.partial_decrypt(&DecryptionRequest {
                responders: ids[1..4].to_vec(),
                ..request.clone()
            }),
            Err(DecryptError::NotAResponder(ids[0]))
        );
        assert_eq!(
            h.partial_decrypt(&DecryptionRequest {
                len: 7,
                ..request.clone()
            }),
            Err(DecryptError::LengthMismatch {
                expected: f.len,
                got: 7
            })
        );
        assert_eq!(
            h.partial_decrypt(&DecryptionRequest {
                participants: vec![ids[0], ids[0], ids[1]],
                ..request.clone()
            }),
            Err(DecryptError::Duplicate(ids[0]))
        );
        // Refusals above did not consume the answer; the first valid request does.
        assert!(!h.has_answered());
        h.partial_decrypt(&request).unwrap();
        assert_eq!(
            h.partial_decrypt(&request),
            Err(DecryptError::AlreadyAnswered)
        );
        let subset = DecryptionRequest {
            participants: ids[..4].to_vec(),
            ..request.clone()
        };
        assert_eq!(
            h.partial_decrypt(&subset),
            Err(DecryptError::AlreadyAnswered)
        );
        assert!(matches!(
            h.receive_share(
                ids[0],
                crate::shamir::KeyShare::from_values(vec![0; 64], 7).unwrap()
            ),
            Err(DecryptError::DuplicateShare(_))
        ));
        assert!(matches!(
            h.receive_share(
                stranger,
                crate::shamir::KeyShare::from_values(vec![0; 3], 7).unwrap()
            ),
            Err(DecryptError::BadShareLength { .. })
        ));
    }

    #[test]
    fn combine_rejects_mismatched_inputs() {
        let mut f = fixture(3, 2, 2);
        let request = DecryptionRequest {
            round: RoundId(5),
            participants: f.ids.clone(),
            responders: f.ids[..2].to_vec(),
            len: f.len,
        };
        let mut partials: Vec<PartialDecryption> = f.holders[..2]
            .iter_mut()
            .map(|h| h.partial_decrypt(&request).unwrap())
            .collect();
        assert_eq!(
            combine(&f.ctx, &request, 2, &f.agg, &partials).unwrap(),
            f.expected
        );
        let other = DecryptionRequest {
            participants: f.ids[..2].to_vec(),
            ..request.clone()
        };
        assert_eq!(
            combine(&f.ctx, &other, 2, &f.agg, &partials),
            Err(DecryptError::ParticipantSetMismatch)
        );
        partials[1].values.pop();
        assert!(matches!(
            combine(&f.ctx, &request, 2, &f.agg, &partials),
            Err(DecryptError::LengthMismatch { .. })
        ));
        partials[1].values.push(f.ctx.modulus());
        assert!(matches!(
            combine(&f.ctx, &request, 2, &f.agg, &partials),
            Err(DecryptError::OutOfRange(_))
        ));
        partials[1].round = RoundId(4);
        assert!(matches!(
            combine(&f.ctx, &request, 2, &f.agg, &partials),
            Err(DecryptError::WrongRound { .. })
        ));
    }
}

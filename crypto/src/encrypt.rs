//! Client-side encryption of an update into RLWE bodies, in RNS with packed slots.
//!
//! For chunk `j` (ring coefficients `[jN, (j+1)N)`, i.e. coordinates `[jNk, (j+1)Nk)` with `k`
//! slots per coefficient) the body is `b_{i,j} = a_{r,j}·s_i + e_{i,j} + Δ·V_{i,j} (mod Q)`
//! (Stevens et al., USENIX Sec 2022, ring variant; packing as in their §5): `a_{r,j}` is the
//! common mask ([`crate::mask`]), `s_i` the ternary round key, `e` centered binomial with parameter
//! η (σ ≈ 3.24), and coefficient `c` of `V` packs the fixed-point messages of coordinates
//! `ck … ck+k−1` as `Σ_t m_{ck+t}·2^(t·w)` ([`crate::encoding::pack_slots`]). `Δ = 2^delta_bits`
//! places the message above the aggregate noise including the flooding of the partial
//! decryptions, so decoding is exact (see [`crate::params`]). Everything is computed per RNS
//! prime: the same integers `s`, `e`, `V` reduced mod each `q_i`, one pointwise NTT product and
//! one inverse NTT per chunk and prime (tfhe-ntt). The mask is implied by the public seed, so the
//! upload is `primes` residues per coefficient, laid out as in [`crate::params`] (chunk-major,
//! then prime-major; the last chunk is truncated — a subset of RLWE coefficients is still an RLWE
//! sample).

use crate::encoding::{EncodingError, Weight, check_finite, encode_weight};
use crate::ids::RoundId;
use crate::keys::RoundSecretKey;
use crate::mask::MaskSeed;
use crate::params::SecAggContext;
use crate::ring::{add_mod, mul_mod_fast, mul_ntt_into_coefficients, reduce_i128};
use rand::CryptoRng;
use thiserror::Error;
use zeroize::Zeroizing;

/// Errors of encryption.
#[derive(Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum EncryptError {
    /// The input could not be encoded (NaN/∞, message too large).
    #[error(transparent)]
    Encoding(#[from] EncodingError),
    /// Output buffer length mismatch.
    #[error("output has length {got}, expected {expected}")]
    LengthMismatch {
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// An empty update.
    #[error("empty update")]
    Empty,
}

/// Centered binomial sample `Σ_{k<η} (a_k − b_k)` from one 64-bit word (η ≤ 32).
#[inline(always)]
fn centered_binomial(word: u64, eta_mask: u64, eta: u32) -> i64 {
    i64::from((word & eta_mask).count_ones()) - i64::from(((word >> eta) & eta_mask).count_ones())
}

/// Encrypts integer messages `m` (already fixed-point encoded, `|m| ≤` per-client bound, one
/// per coordinate) into `out` (`ctx.residues_len(messages.len())` residues).
///
/// # Errors
/// [`EncryptError::LengthMismatch`], [`EncryptError::Empty`], [`EncodingError::MessageTooLarge`]
/// (checked before anything is written).
pub fn encrypt_messages<R: CryptoRng + ?Sized>(
    out: &mut [u64],
    ctx: &SecAggContext,
    round: RoundId,
    seed: &MaskSeed,
    key: &RoundSecretKey,
    messages: &[i64],
    rng: &mut R,
) -> Result<(), EncryptError> {
    if messages.is_empty() {
        return Err(EncryptError::Empty);
    }
    let expected = ctx.residues_len(messages.len());
    if out.len() != expected {
        return Err(EncryptError::LengthMismatch { expected, got: out.len() });
    }
    let bound = ctx.derived().per_client_bound;
    if let Some(&m) = messages.iter().find(|m| m.unsigned_abs() > bound) {
        return Err(EncodingError::MessageTooLarge { value: m, bound }.into());
    }
    encrypt_with(out, ctx, round, seed, key, rng, messages.len(), |c| messages[c]);
    Ok(())
}

/// The core loop: for each coefficient, `out_i = (a·s)_i + e + Δ·V (mod q_i)` with `V` the packed
/// messages `message(x)` of its coordinates (`x < len`; missing slots are 0).
#[allow(clippy::too_many_arguments)]
fn encrypt_with<R: CryptoRng + ?Sized>(
    out: &mut [u64],
    ctx: &SecAggContext,
    round: RoundId,
    seed: &MaskSeed,
    key: &RoundSecretKey,
    rng: &mut R,
    len: usize,
    message: impl Fn(usize) -> i64,
) {
    let n = ctx.polynomial_size();
    let primes = ctx.num_primes();
    let (k, w) = (ctx.slots(), ctx.params().slot_bits);
    let rns = ctx.rns();
    let eta = ctx.params().error_eta;
    let eta_mask = (1u64 << eta) - 1;
    let expander = seed.expander(round);
    // a·s per prime for the current chunk: with the body it reveals e + Δ·V, so it is wiped.
    let mut a_s = Zeroizing::new(vec![0u64; primes * n]);
    for j in 0..ctx.num_chunks(len) {
        let coefficients = ctx.chunk_coefficients(j, len);
        let c = coefficients.len();
        for (i, buf) in a_s.chunks_exact_mut(n).enumerate() {
            expander.expand_ntt(ctx, j, i, buf);
            mul_ntt_into_coefficients(ctx.plan(i), buf, key.ntt(i));
        }
        let chunk_out = &mut out[ctx.chunk_residues(j, len)];
        for (t, coefficient) in coefficients.enumerate() {
            let base = coefficient * k;
            let mut v = 0i128;
            for x in (base..base + k).rev() {
                v = (v << w) + i128::from(if x < len { message(x) } else { 0 });
            }
            let e = centered_binomial(rng.next_u64(), eta_mask, eta);
            for i in 0..primes {
                let (d, q) = (rns.div[i], rns.moduli[i]);
                let dv = mul_mod_fast(reduce_i128(v, d), rns.slot_scale[i][0], d);
                let ev = if e < 0 { q - e.unsigned_abs() } else { e as u64 };
                chunk_out[i * c + t] = add_mod(add_mod(a_s[i * n + t], dv, q), ev, q);
            }
        }
    }
}

/// Encrypts a weighted FedAvg update: `out` (`ctx.body_len(update.len())` residues) receives the
/// bodies of `w·clip(x)·2^f` for every coordinate and of `w·2^f` in the last (weight)
/// coordinate, packed. NaN/∞ are rejected before anything is written.
///
/// # Errors
/// [`EncryptError::LengthMismatch`], [`EncryptError::Empty`], [`EncodingError::NotFinite`].
///
/// # Example
/// Toy parameters, **not secure**:
/// ```
/// use cohort_crypto::*;
/// let ctx = SecAggParams::toy_insecure(16).build().unwrap();
/// let key = RoundSecretKey::generate(&ctx);
/// let seed = MaskSeed([1; 32]);
/// let mut rng = rand::rng();
/// let mut out = vec![0u64; ctx.body_len(3)];
/// encrypt_update(&mut out, &ctx, RoundId(1), &seed, &key, &[0.5, -1.0, 2.0], Weight::one(), &mut rng).unwrap();
/// // 3 parameters + the weight = 4 coordinates in 2 coefficients, 3 residues each.
/// assert_eq!(out.len(), 6);
/// assert!(out.iter().all(|&b| b < 1 << 62));
/// ```
#[allow(clippy::too_many_arguments)]
pub fn encrypt_update<R: CryptoRng + ?Sized>(
    out: &mut [u64],
    ctx: &SecAggContext,
    round: RoundId,
    seed: &MaskSeed,
    key: &RoundSecretKey,
    update: &[f32],
    weight: Weight,
    rng: &mut R,
) -> Result<(), EncryptError> {
    let expected = ctx.body_len(update.len());
    if out.len() != expected {
        return Err(EncryptError::LengthMismatch { expected, got: out.len() });
    }
    check_finite(update)?;
    let p = ctx.params();
    let (clip, w, scale) = (p.clip, weight.get(), f64::from(p.fraction_bits).exp2());
    let w_code = encode_weight(ctx, weight);
    let last = update.len();
    encrypt_with(out, ctx, round, seed, key, rng, last + 1, |c| {
        if c == last { w_code } else { (f64::from(update[c]).clamp(-clip, clip) * w * scale).round() as i64 }
    });
    Ok(())
}

/// Allocating twin of [`encrypt_update`]; returns `ctx.body_len(update.len())` residues.
///
/// # Errors
/// As [`encrypt_update`].
pub fn allocate_and_encrypt_update<R: CryptoRng + ?Sized>(
    ctx: &SecAggContext,
    round: RoundId,
    seed: &MaskSeed,
    key: &RoundSecretKey,
    update: &[f32],
    weight: Weight,
    rng: &mut R,
) -> Result<Vec<u64>, EncryptError> {
    let mut out = vec![0u64; ctx.body_len(update.len())];
    encrypt_update(&mut out, ctx, round, seed, key, update, weight, rng)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::SecAggParams;
    use crate::ring::{negacyclic_mul, sub_mod};
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// With the key known, b − a·s = e + Δ·V: decoding one ciphertext gives every message
    /// exactly, in every chunk (including the truncated last one) and slot.
    #[test]
    fn single_ciphertext_decrypts_with_the_key() {
        let ctx = SecAggParams::toy_insecure(64).build().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let key = RoundSecretKey::generate_with(&ctx, &mut rng);
        let seed = MaskSeed([3; 32]);
        let bound = ctx.derived().per_client_bound as i64;
        let mut msgs: Vec<i64> = (0..400).map(|i| (i * 7919 % 2001) - 1000).collect();
        msgs[0] = bound;
        msgs[1] = -bound;
        msgs[399] = bound;
        let mut out = vec![0u64; ctx.residues_len(msgs.len())];
        encrypt_messages(&mut out, &ctx, RoundId(9), &seed, &key, &msgs, &mut rng).unwrap();
        let (n, p, len) = (64, 3, msgs.len());
        let mut decoded = vec![0i64; len];
        for j in 0..ctx.num_chunks(len) {
            let coefficients = ctx.chunk_coefficients(j, len);
            let c = coefficients.len();
            let body = &out[ctx.chunk_residues(j, len)];
            let a_s: Vec<Vec<u64>> = (0..p)
                .map(|i| {
                    let a = seed.expander(RoundId(9)).expand_coefficients(&ctx, j, i);
                    negacyclic_mul(ctx.plan(i), &a, &key.residues()[i * n..(i + 1) * n])
                })
                .collect();
            for (t, coefficient) in coefficients.enumerate() {
                let residues: Vec<u64> = (0..p).map(|i| sub_mod(body[i * c + t], a_s[i][t], ctx.moduli()[i])).collect();
                let range = coefficient * 3..(coefficient * 3 + 3).min(len);
                crate::encoding::decode_coefficient(&ctx, &residues, &mut decoded[range]).unwrap();
            }
        }
        assert_eq!(decoded, msgs);
        let mut short = vec![0u64; 3];
        assert_eq!(
            encrypt_messages(&mut short, &ctx, RoundId(9), &seed, &key, &msgs, &mut rng),
            Err(EncryptError::LengthMismatch { expected: 402, got: 3 })
        );
        let mut one = vec![0u64; 3];
        assert!(matches!(
            encrypt_messages(&mut one, &ctx, RoundId(9), &seed, &key, &[bound + 1], &mut rng),
            Err(EncryptError::Encoding(EncodingError::MessageTooLarge { .. }))
        ));
        let mut out = vec![5u64; 3];
        assert!(matches!(
            encrypt_update(&mut out, &ctx, RoundId(9), &seed, &key, &[1.0, f32::NAN], Weight::one(), &mut rng),
            Err(EncryptError::Encoding(EncodingError::NotFinite { index: 1, .. }))
        ));
        assert_eq!(out, vec![5; 3]);
        let mut empty: Vec<u64> = vec![];
        assert_eq!(
            encrypt_messages(&mut empty, &ctx, RoundId(9), &seed, &key, &[], &mut rng),
            Err(EncryptError::Empty)
        );
    }

    #[test]
    fn centered_binomial_range() {
        let mask = (1u64 << 21) - 1;
        assert_eq!(centered_binomial(mask, mask, 21), 21);
        assert_eq!(centered_binomial(mask << 21, mask, 21), -21);
        assert_eq!(centered_binomial(0, mask, 21), 0);
    }
}

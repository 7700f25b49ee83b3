//! Client-side encryption of an update into RLWE bodies.
//!
//! For chunk `j` (coordinates `[jN, (j+1)N)`) the body is
//! `b_{i,j} = a_{r,j}·s_i + e_{i,j} + Δ·m_{i,j} (mod q)` (Stevens et al., USENIX Sec 2022,
//! ring variant): `a_{r,j}` is the common mask ([`crate::mask`]), `s_i` the ternary round key,
//! `e` centered binomial with parameter η (σ ≈ 3.24), and `Δ = 2^delta_bits` places the
//! message above the total noise of an aggregate so decoding is exact (see
//! [`crate::params`]). The mask is implied by the public seed, so the upload is exactly one
//! `u64` per coordinate; the last chunk is truncated to the vector length (a subset of RLWE
//! coefficients is still an RLWE sample). Products use one pointwise NTT product and one
//! inverse NTT per chunk (tfhe-ntt).

use crate::encoding::{EncodingError, Weight, check_finite, encode_weight};
use crate::ids::RoundId;
use crate::keys::RoundSecretKey;
use crate::mask::MaskSeed;
use crate::params::SecAggContext;
use crate::ring::{add_mod, mul_ntt_into_coefficients};
use rand::CryptoRng;
use thiserror::Error;
use zeroize::Zeroize;

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

/// Encrypts integer messages `m` (already fixed-point encoded, `|m| ≤` per-client bound) into
/// `out` (same length): `out[c] = (a·s + e)[c] + Δ·m[c] mod q`.
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
    if out.len() != messages.len() {
        return Err(EncryptError::LengthMismatch {
            expected: messages.len(),
            got: out.len(),
        });
    }
    if messages.is_empty() {
        return Err(EncryptError::Empty);
    }
    let bound = ctx.derived().per_client_bound;
    if let Some(&m) = messages.iter().find(|m| m.unsigned_abs() > bound) {
        return Err(EncodingError::MessageTooLarge { value: m, bound }.into());
    }
    let delta_bits = ctx.derived().delta_bits;
    encrypt_with(out, ctx, round, seed, key, rng, |c| {
        messages[c] << delta_bits
    });
    Ok(())
}

/// The core loop: `out[c] = (a·s)[c] + e + plain(c) mod q` with `plain(c)` a signed integer
/// already scaled by Δ (its absolute value below q/2).
fn encrypt_with<R: CryptoRng + ?Sized>(
    out: &mut [u64],
    ctx: &SecAggContext,
    round: RoundId,
    seed: &MaskSeed,
    key: &RoundSecretKey,
    rng: &mut R,
    plain: impl Fn(usize) -> i64,
) {
    let q = ctx.modulus();
    let n = ctx.polynomial_size();
    let len = out.len();
    let eta = ctx.params().error_eta;
    let eta_mask = (1u64 << eta) - 1;
    let expander = seed.expander(round);
    let mut buf = vec![0u64; n];
    for j in 0..ctx.num_chunks(len) {
        expander.expand_ntt(ctx, j, &mut buf);
        mul_ntt_into_coefficients(ctx.plan(), &mut buf, key.ntt());
        let range = ctx.chunk_range(j, len);
        let start = range.start;
        for (k, (o, &as_)) in out[range].iter_mut().zip(&buf).enumerate() {
            let e = centered_binomial(rng.next_u64(), eta_mask, eta);
            let v = plain(start + k) + e; // |v| < q/2
            let v = if v < 0 {
                (v + q as i64) as u64
            } else {
                v as u64
            };
            *o = add_mod(as_, v, q);
        }
    }
    // buf held a·s, which with the body reveals e + Δm; wipe it.
    buf.zeroize();
}

/// Encrypts a weighted FedAvg update: `out` (length `update.len() + 1`) receives the bodies of
/// `w·clip(x)·2^f` for every coordinate and of `w·2^f` in the last coordinate.
/// NaN/∞ are rejected before anything is written.
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
/// let mut out = vec![0u64; 4];
/// encrypt_update(&mut out, &ctx, RoundId(1), &seed, &key, &[0.5, -1.0, 2.0], Weight::one(), &mut rng).unwrap();
/// assert!(out.iter().all(|&b| b < ctx.modulus()));
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
    if out.len() != update.len() + 1 {
        return Err(EncryptError::LengthMismatch {
            expected: update.len() + 1,
            got: out.len(),
        });
    }
    check_finite(update)?;
    let p = ctx.params();
    let (clip, w, scale) = (p.clip, weight.get(), f64::from(p.fraction_bits).exp2());
    let delta_bits = ctx.derived().delta_bits;
    let w_code = encode_weight(ctx, weight);
    let last = update.len();
    encrypt_with(out, ctx, round, seed, key, rng, |c| {
        let m = if c == last {
            w_code
        } else {
            (f64::from(update[c]).clamp(-clip, clip) * w * scale).round() as i64
        };
        m << delta_bits
    });
    Ok(())
}

/// Allocating twin of [`encrypt_update`]; returns `update.len() + 1` bodies.
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
    let mut out = vec![0u64; update.len() + 1];
    encrypt_update(&mut out, ctx, round, seed, key, update, weight, rng)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::SecAggParams;
    use crate::ring::{negacyclic_mul, sub_mod, to_centered};
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// With the key known, b − a·s = e + Δm: decoding one ciphertext gives m exactly.
    #[test]
    fn single_ciphertext_decrypts_with_the_key() {
        let ctx = SecAggParams::toy_insecure(64).build().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let key = RoundSecretKey::generate_with(&ctx, &mut rng);
        let seed = MaskSeed([3; 32]);
        let msgs: Vec<i64> = (0..150).map(|i| (i * 7919 % 2001) - 1000).collect();
        let mut out = vec![0u64; msgs.len()];
        encrypt_messages(&mut out, &ctx, RoundId(9), &seed, &key, &msgs, &mut rng).unwrap();
        let q = ctx.modulus();
        let delta = ctx.delta() as i64;
        for j in 0..ctx.num_chunks(msgs.len()) {
            let a = seed.expander(RoundId(9)).expand_coefficients(&ctx, j);
            let as_ = negacyclic_mul(ctx.plan(), &a, key.coefficients());
            for c in ctx.chunk_range(j, msgs.len()) {
                let v = to_centered(sub_mod(out[c], as_[c - j * 64], q), q);
                let e = v - msgs[c] * delta;
                assert!(e.abs() <= 21, "noise {e}");
            }
        }
        let mut short = vec![0u64; 3];
        assert_eq!(
            encrypt_messages(&mut short, &ctx, RoundId(9), &seed, &key, &msgs, &mut rng),
            Err(EncryptError::LengthMismatch {
                expected: 150,
                got: 3
            })
        );
        let mut one = vec![0u64; 1];
        assert!(matches!(
            encrypt_messages(
                &mut one,
                &ctx,
                RoundId(9),
                &seed,
                &key,
                &[i64::MAX],
                &mut rng
            ),
            Err(EncryptError::Encoding(
                EncodingError::MessageTooLarge { .. }
            ))
        ));
        let mut out = vec![5u64; 3];
        assert!(matches!(
            encrypt_update(
                &mut out,
                &ctx,
                RoundId(9),
                &seed,
                &key,
                &[1.0, f32::NAN],
                Weight::one(),
                &mut rng
            ),
            Err(EncryptError::Encoding(EncodingError::NotFinite {
                index: 1,
                ..
            }))
        ));
        assert_eq!(out, vec![5; 3]);
    }

    #[test]
    fn centered_binomial_range() {
        let mask = (1u64 << 21) - 1;
        assert_eq!(centered_binomial(mask, mask, 21), 21);
        assert_eq!(centered_binomial(mask << 21, mask, 21), -21);
        assert_eq!(centered_binomial(0, mask, 21), 0);
    }
}

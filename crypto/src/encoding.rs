//! Fixed-point encoding of model updates into `Z_q`, and decoding of sums.
//!
//! A coordinate `x` (f32) with FedAvg weight `w` is encoded as `m = round(w · clip(x, ±R) · 2^f)`,
//! an integer with `|m| ≤ W·R·2^f`. Weighted FedAvg sends `w·x` for every coordinate plus one
//! extra coordinate `round(w · 2^f)`; the decoded weighted mean is `Σ m_c / Σ m_w`. Plaintexts are
//! packed `slots` per ring coefficient, `Δ·Σ_j m_j·2^(j·w)` ([`pack_slots`]);
//! [`crate::params::SecAggParams::validate`] guarantees that sums
//! of up to `max_clients` such messages never wrap mod q and stay above the noise (headroom).
//! NaN and ±∞ are rejected with [`EncodingError::NotFinite`] before anything is encrypted.

use crate::params::SecAggContext;
use crate::ring::crt_centered;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Errors of encoding and decoding.
#[derive(Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum EncodingError {
    /// A coordinate is NaN or infinite.
    #[error("coordinate {index} is not finite ({value})")]
    NotFinite {
        /// Index of the offending coordinate.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// A weight is outside `[0, W]` or not finite.
    #[error("weight {weight} outside [0, {max}]")]
    BadWeight {
        /// The rejected weight.
        weight: f64,
        /// The maximum weight W.
        max: f64,
    },
    /// More clients than the headroom allows.
    #[error("{clients} clients exceed the headroom for {max} clients")]
    TooManyClients {
        /// Requested number of clients.
        clients: usize,
        /// `max_clients` of the parameters.
        max: u32,
    },
    /// An integer message exceeds the per-client bound.
    #[error("message {value} exceeds the per-client bound {bound}")]
    MessageTooLarge {
        /// The message.
        value: i64,
        /// The bound.
        bound: u64,
    },
    /// The decoded total weight is zero, so no mean exists.
    #[error("total weight is zero")]
    ZeroWeight,
    /// Output buffer length mismatch.
    #[error("buffer has length {got}, expected {expected}")]
    LengthMismatch {
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
}

/// A FedAvg weight in `[0, W]` (typically `n_i / n_ref`, with `n_i` the local sample count).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
pub struct Weight(f64);

impl Weight {
    /// Checks `0 ≤ w ≤ W` and finiteness.
    ///
    /// # Errors
    /// [`EncodingError::BadWeight`].
    pub fn new(ctx: &SecAggContext, w: f64) -> Result<Self, EncodingError> {
        let max = ctx.params().max_weight;
        if w.is_finite() && (0.0..=max).contains(&w) {
            Ok(Self(w))
        } else {
            Err(EncodingError::BadWeight { weight: w, max })
        }
    }

    /// The unit weight (plain sum / unweighted mean).
    pub fn one() -> Self {
        Self(1.0)
    }

    /// The value.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// Encodes one coordinate: clip to `[−R, R]`, multiply by the weight, scale by `2^f`, round
/// to nearest. Returns the integer message `m`.
///
/// # Errors
/// [`EncodingError::NotFinite`] (with index 0) for NaN or ±∞.
///
/// # Example
/// ```
/// use cohort_crypto::{encoding, SecAggParams, Weight};
/// let ctx = SecAggParams::default().build().unwrap();
/// assert_eq!(encoding::encode_value(&ctx, 0.5, Weight::one()).unwrap(), 1 << 15);
/// assert_eq!(encoding::encode_value(&ctx, 1e9, Weight::one()).unwrap(), 4 << 16); // clipped at R = 4
/// assert!(encoding::encode_value(&ctx, f32::NAN, Weight::one()).is_err());
/// ```
pub fn encode_value(ctx: &SecAggContext, x: f32, weight: Weight) -> Result<i64, EncodingError> {
    if !x.is_finite() {
        return Err(EncodingError::NotFinite { index: 0, value: x });
    }
    Ok(encode_finite(x, weight.0, ctx.params().clip, scale(ctx)))
}

#[inline(always)]
fn scale(ctx: &SecAggContext) -> f64 {
    f64::from(ctx.params().fraction_bits).exp2()
}

#[inline(always)]
fn encode_finite(x: f32, w: f64, clip: f64, scale: f64) -> i64 {
    (f64::from(x).clamp(-clip, clip) * w * scale).round() as i64
}

/// Rejects any non-finite coordinate, reporting the first.
///
/// # Errors
/// [`EncodingError::NotFinite`].
pub fn check_finite(update: &[f32]) -> Result<(), EncodingError> {
    if update.iter().all(|x| x.is_finite()) {
        return Ok(());
    }
    let (index, &value) = update.iter().enumerate().find(|(_, x)| !x.is_finite()).unwrap_or((0, &f32::NAN));
    Err(EncodingError::NotFinite { index, value })
}

/// Encodes `update` with `weight` into `out` (length `update.len() + 1`); the last coordinate
/// is the encoded weight `round(w·2^f)`. Nothing is written if any coordinate is not finite.
///
/// # Errors
/// [`EncodingError::LengthMismatch`], [`EncodingError::NotFinite`].
pub fn encode_weighted_update(
    out: &mut [i64],
    ctx: &SecAggContext,
    update: &[f32],
    weight: Weight,
) -> Result<(), EncodingError> {
    if out.len() != update.len() + 1 {
        return Err(EncodingError::LengthMismatch { expected: update.len() + 1, got: out.len() });
    }
    check_finite(update)?;
    let (clip, s) = (ctx.params().clip, scale(ctx));
    for (o, &x) in out.iter_mut().zip(update) {
        *o = encode_finite(x, weight.0, clip, s);
    }
    out[update.len()] = encode_weight(ctx, weight);
    Ok(())
}

/// Allocating twin of [`encode_weighted_update`].
///
/// # Errors
/// As [`encode_weighted_update`].
pub fn allocate_and_encode_weighted_update(
    ctx: &SecAggContext,
    update: &[f32],
    weight: Weight,
) -> Result<Vec<i64>, EncodingError> {
    let mut out = vec![0i64; update.len() + 1];
    encode_weighted_update(&mut out, ctx, update, weight)?;
    Ok(out)
}

/// The encoded weight coordinate `round(w · 2^f)`.
pub fn encode_weight(ctx: &SecAggContext, weight: Weight) -> i64 {
    (weight.0 * scale(ctx)).round() as i64
}

/// Packs the signed slot values `m_j` (at most `slots` of them, missing ones are 0) of one
/// coefficient into `V = Σ_j m_j·2^(j·w)`, `w = slot_bits`. The plaintext coefficient is `Δ·V`.
///
/// # Errors
/// [`EncodingError::MessageTooLarge`] if some `|m_j|` exceeds the per-client bound (which the
/// headroom check is based on); [`EncodingError::LengthMismatch`] for more than `slots` values.
#[inline]
pub fn pack_slots(ctx: &SecAggContext, values: &[i64]) -> Result<i128, EncodingError> {
    if values.len() > ctx.slots() {
        return Err(EncodingError::LengthMismatch { expected: ctx.slots(), got: values.len() });
    }
    let bound = ctx.derived().per_client_bound;
    if let Some(&m) = values.iter().find(|m| m.unsigned_abs() > bound) {
        return Err(EncodingError::MessageTooLarge { value: m, bound });
    }
    Ok(pack_unchecked(ctx.params().slot_bits, values))
}

/// `Σ_j m_j·2^(j·w)` for values already bounded by the validated headroom.
#[inline(always)]
pub(crate) fn pack_unchecked(w: u32, values: &[i64]) -> i128 {
    values.iter().rev().fold(0i128, |acc, &m| (acc << w) + i128::from(m))
}

/// Unpacks `V = Σ_j m_j·2^(j·w)` into `out` (length ≤ `slots`), borrow-aware: each slot is the
/// signed residue of the remainder modulo `2^w` in `[−2^(w−1), 2^(w−1))`, the last slot takes the
/// rest. Exact whenever every `|m_j| < 2^(w−1)`, which the headroom check guarantees for sums of
/// up to `max_clients` encodings. Slots beyond `out` must be zero.
///
/// # Errors
/// `Err(())` if a slot exceeds the aggregate message bound or an unused slot is nonzero (the
/// value was not a valid packed sum).
#[inline]
pub(crate) fn unpack_slots(ctx: &SecAggContext, v: i128, out: &mut [i64]) -> Result<(), ()> {
    let w = ctx.params().slot_bits;
    let k = ctx.slots();
    let bound = u128::from(ctx.derived().message_bound);
    let (mask, half) = ((1u128 << w) - 1, 1i128 << (w - 1));
    let mut rest = v;
    for j in 0..k {
        let m = if j + 1 == k {
            rest
        } else {
            let low = (rest as u128 & mask) as i128;
            let m = if low >= half { low - (1i128 << w) } else { low };
            rest = (rest - m) >> w;
            m
        };
        if m.unsigned_abs() > bound {
            return Err(());
        }
        match out.get_mut(j) {
            Some(o) => *o = m as i64,
            None if m != 0 => return Err(()),
            None => {}
        }
    }
    Ok(())
}

/// Decodes one coefficient from its residues (one per prime) of `Δ·V + noise`: CRT (Garner),
/// centered lift, rounding by Δ, the noise bound check and the slot unpacking into `out`.
///
/// # Errors
/// `Err(())` if the value is not `Δ·V + noise` with `|noise| ≤ noise_bound` and valid slots.
#[inline]
pub(crate) fn decode_coefficient(ctx: &SecAggContext, residues: &[u64], out: &mut [i64]) -> Result<(), ()> {
    let x = crt_centered(ctx.rns(), residues);
    let (v, e) = x.round_shift(ctx.derived().delta_bits).ok_or(())?;
    if e.unsigned_abs() > ctx.derived().noise_bound {
        return Err(());
    }
    unpack_slots(ctx, v, out)
}

/// Checks that `clients` contributions fit the headroom of the parameters.
///
/// # Errors
/// [`EncodingError::TooManyClients`].
pub fn check_headroom(ctx: &SecAggContext, clients: usize) -> Result<(), EncodingError> {
    let max = ctx.params().max_clients;
    if clients > max as usize {
        return Err(EncodingError::TooManyClients { clients, max });
    }
    Ok(())
}

/// Decodes integer sums to reals (`m / 2^f`): the plain sum of the encoded updates.
pub fn decode_sum(ctx: &SecAggContext, sums: &[i64]) -> Vec<f64> {
    let inv = 1.0 / scale(ctx);
    sums.iter().map(|&m| m as f64 * inv).collect()
}

/// Decodes a weighted FedAvg sum (last coordinate = total encoded weight) into the weighted
/// mean `Σ w_i x_i / Σ w_i` of the `len − 1` model coordinates.
///
/// # Errors
/// [`EncodingError::ZeroWeight`] if the total weight is zero (or `sums` is empty).
pub fn decode_weighted_mean(sums: &[i64]) -> Result<Vec<f64>, EncodingError> {
    let (&total, body) = sums.split_last().ok_or(EncodingError::ZeroWeight)?;
    if total == 0 {
        return Err(EncodingError::ZeroWeight);
    }
    let inv = 1.0 / total as f64;
    Ok(body.iter().map(|&m| m as f64 * inv).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::SecAggParams;

    #[test]
    fn edge_cases() {
        let ctx = SecAggParams::default().build().unwrap();
        let r = ctx.params().clip as f32;
        let one = Weight::one();
        assert_eq!(encode_value(&ctx, r, one).unwrap(), 4 << 16);
        assert_eq!(encode_value(&ctx, -r, one).unwrap(), -(4 << 16));
        assert_eq!(encode_value(&ctx, f32::MAX, one).unwrap(), 4 << 16);
        assert_eq!(encode_value(&ctx, -f32::MAX, one).unwrap(), -(4 << 16));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert!(matches!(encode_value(&ctx, bad, one), Err(EncodingError::NotFinite { .. })));
        }
        let mut out = vec![7i64; 4];
        let err = encode_weighted_update(&mut out, &ctx, &[1.0, f32::INFINITY, 0.0], one).unwrap_err();
        assert_eq!(err, EncodingError::NotFinite { index: 1, value: f32::INFINITY });
        assert_eq!(out, vec![7; 4], "nothing written on error");
        assert!(Weight::new(&ctx, -1.0).is_err());
        assert!(Weight::new(&ctx, f64::NAN).is_err());
        assert!(Weight::new(&ctx, 17.0).is_err());
        assert!(Weight::new(&ctx, 16.0).is_ok());
        assert_eq!(decode_weighted_mean(&[5, 0]), Err(EncodingError::ZeroWeight));
    }

    /// Residues of `Δ·V + e` per prime.
    fn residues(ctx: &SecAggContext, v: i128, e: i128) -> Vec<u64> {
        let rns = ctx.rns();
        (0..ctx.num_primes())
            .map(|i| {
                let d = rns.div[i];
                let q = d.divisor();
                let dv = crate::ring::mul_mod_fast(crate::ring::reduce_i128(v, d), rns.slot_scale[i][0], d);
                crate::ring::add_mod(dv, crate::ring::reduce_i128(e, d), q)
            })
            .collect()
    }

    /// max_clients clients all at +R (and all at −R, and mixed signs across slots) with maximal
    /// weight: the packed sum plus the extreme noise decodes exactly (no wrap mod Q, no slot
    /// overflow), and one more client would be refused.
    #[test]
    fn headroom_holds_for_max_clients_at_the_clip() {
        let ctx = SecAggParams::default().build().unwrap();
        let w = Weight::new(&ctx, ctx.params().max_weight).unwrap();
        let n = ctx.params().max_clients as i64;
        check_headroom(&ctx, n as usize).unwrap();
        assert!(check_headroom(&ctx, n as usize + 1).is_err());
        let r = ctx.params().clip as f32;
        let m = encode_value(&ctx, r, w).unwrap();
        assert_eq!(m, (16 * 4) << 16);
        let noise = ctx.derived().noise_bound as i128;
        for signs in [[1, 1, 1], [-1, -1, -1], [1, -1, 1], [-1, 1, -1]] {
            let sums: Vec<i64> = signs.iter().map(|s| s * m * n).collect();
            let v = pack_slots(&ctx, &[m * signs[0], m * signs[1], m * signs[2]]).unwrap() * i128::from(n);
            assert_eq!(v, pack_unchecked(32, &sums));
            for e in [-noise, noise, 0] {
                let mut out = [0i64; 3];
                decode_coefficient(&ctx, &residues(&ctx, v, e), &mut out).unwrap();
                assert_eq!(out.to_vec(), sums);
            }
            // Beyond the noise bound: refused, not silently wrong.
            let mut out = [0i64; 3];
            assert!(decode_coefficient(&ctx, &residues(&ctx, v, noise + 1), &mut out).is_err() || out.to_vec() == sums);
        }
        let bound = ctx.derived().per_client_bound as i64;
        assert!(matches!(pack_slots(&ctx, &[bound + 1]), Err(EncodingError::MessageTooLarge { .. })));
        assert!(pack_slots(&ctx, &[0; 4]).is_err());
    }

    proptest::proptest! {
        /// Packing and borrow-aware unpacking are inverse on every slot value up to the aggregate
        /// bound, extremes included.
        #[test]
        fn pack_unpack_round_trip(raw in proptest::array::uniform3(proptest::prelude::any::<i64>()), extreme in proptest::array::uniform3(0u8..4), used in 1usize..=3) {
            let ctx = SecAggParams::toy_insecure(16).build().unwrap();
            let b = ctx.derived().message_bound as i64;
            let vals: Vec<i64> = raw.iter().zip(extreme).map(|(&x, e)| match e {
                0 => b,
                1 => -b,
                2 => 0,
                _ => x.rem_euclid(2 * b + 1) - b,
            }).take(used).collect();
            let v = pack_unchecked(ctx.params().slot_bits, &vals);
            let mut out = vec![0i64; used];
            proptest::prop_assert!(unpack_slots(&ctx, v, &mut out).is_ok());
            proptest::prop_assert_eq!(&out, &vals);
            // Through the full decode path with the extreme noise.
            let noise = ctx.derived().noise_bound as i128;
            let mut out = vec![0i64; used];
            proptest::prop_assert!(decode_coefficient(&ctx, &residues(&ctx, v, -noise), &mut out).is_ok());
            proptest::prop_assert_eq!(out, vals);
        }
    }

    #[test]
    fn weighted_mean_round_trip() {
        let ctx = SecAggParams::default().build().unwrap();
        let a = allocate_and_encode_weighted_update(&ctx, &[1.0, -2.0], Weight::new(&ctx, 3.0).unwrap()).unwrap();
        let b = allocate_and_encode_weighted_update(&ctx, &[0.0, 2.0], Weight::new(&ctx, 1.0).unwrap()).unwrap();
        let sum: Vec<i64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_eq!(decode_weighted_mean(&sum).unwrap(), vec![0.75, -1.0]);
        assert_eq!(decode_sum(&ctx, &[1 << 16]), vec![1.0]);
    }
}

//! Fixed-point encoding of model updates into `Z_q`, and decoding of sums.
//!
//! A coordinate `x` (f32) with FedAvg weight `w` is encoded as `m = round(w · clip(x, ±R) · 2^f)`,
//! an integer with `|m| ≤ W·R·2^f`. Weighted FedAvg sends `w·x` for every coordinate plus one
//! extra coordinate `round(w · 2^f)`; the decoded weighted mean is `Σ m_c / Σ m_w`. Plaintexts are
//! `Δ·m mod q` ([`to_plaintext`]); [`crate::params::SecAggParams::validate`] guarantees that sums
//! of up to `max_clients` such messages never wrap mod q and stay above the noise (headroom).
//! NaN and ±∞ are rejected with [`EncodingError::NotFinite`] before anything is encrypted.

use crate::params::SecAggContext;
use crate::ring::from_signed;
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
    let (index, &value) = update
        .iter()
        .enumerate()
        .find(|(_, x)| !x.is_finite())
        .unwrap_or((0, &f32::NAN));
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
        return Err(EncodingError::LengthMismatch {
            expected: update.len() + 1,
            got: out.len(),
        });
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

/// The plaintext `Δ·m mod q` of an integer message.
///
/// # Errors
/// [`EncodingError::MessageTooLarge`] if `|m|` exceeds the per-client bound (which the
/// headroom check is based on).
#[inline]
pub fn to_plaintext(ctx: &SecAggContext, m: i64) -> Result<u64, EncodingError> {
    let bound = ctx.derived().per_client_bound;
    if m.unsigned_abs() > bound {
        return Err(EncodingError::MessageTooLarge { value: m, bound });
    }
    Ok(from_signed(m << ctx.derived().delta_bits, ctx.modulus()))
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
    use crate::ring::to_centered;

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
            assert!(matches!(
                encode_value(&ctx, bad, one),
                Err(EncodingError::NotFinite { .. })
            ));
        }
        let mut out = vec![7i64; 4];
        let err =
            encode_weighted_update(&mut out, &ctx, &[1.0, f32::INFINITY, 0.0], one).unwrap_err();
        assert_eq!(
            err,
            EncodingError::NotFinite {
                index: 1,
                value: f32::INFINITY
            }
        );
        assert_eq!(out, vec![7; 4], "nothing written on error");
        assert!(Weight::new(&ctx, -1.0).is_err());
        assert!(Weight::new(&ctx, f64::NAN).is_err());
        assert!(Weight::new(&ctx, 17.0).is_err());
        assert!(Weight::new(&ctx, 16.0).is_ok());
        assert_eq!(
            decode_weighted_mean(&[5, 0]),
            Err(EncodingError::ZeroWeight)
        );
    }

    /// max_clients clients all at +R (and all at −R) with maximal weight: the plaintext sum
    /// mod q, centered, equals Δ·Σm exactly (no wrap), with room for the noise bound.
    #[test]
    fn headroom_holds_for_max_clients_at_the_clip() {
        let ctx = SecAggParams::default().build().unwrap();
        let q = ctx.modulus();
        let w = Weight::new(&ctx, ctx.params().max_weight).unwrap();
        let n = ctx.params().max_clients as usize;
        check_headroom(&ctx, n).unwrap();
        assert!(check_headroom(&ctx, n + 1).is_err());
        for x in [ctx.params().clip as f32, -(ctx.params().clip as f32)] {
            let m = encode_value(&ctx, x, w).unwrap();
            let p = to_plaintext(&ctx, m).unwrap();
            let mut acc = 0u64;
            for _ in 0..n {
                acc = crate::ring::add_mod(acc, p, q);
            }
            let noise = ctx.derived().noise_bound as i64;
            for e in [-noise, noise] {
                let v = to_centered(crate::ring::add_mod(acc, from_signed(e, q), q), q);
                let delta = ctx.delta() as i64;
                assert_eq!((v + delta / 2).div_euclid(delta), m * n as i64);
            }
        }
        assert!(to_plaintext(&ctx, ctx.derived().per_client_bound as i64 + 1).is_err());
    }

    #[test]
    fn weighted_mean_round_trip() {
        let ctx = SecAggParams::default().build().unwrap();
        let a = allocate_and_encode_weighted_update(
            &ctx,
            &[1.0, -2.0],
            Weight::new(&ctx, 3.0).unwrap(),
        )
        .unwrap();
        let b =
            allocate_and_encode_weighted_update(&ctx, &[0.0, 2.0], Weight::new(&ctx, 1.0).unwrap())
                .unwrap();
        let sum: Vec<i64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_eq!(decode_weighted_mean(&sum).unwrap(), vec![0.75, -1.0]);
        assert_eq!(decode_sum(&ctx, &[1 << 16]), vec![1.0]);
    }
}

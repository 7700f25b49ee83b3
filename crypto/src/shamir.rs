//! Shamir secret sharing (Shamir, CACM 1979) of round keys over `Z_Q`, as independent sharings
//! over each RNS prime field GF(q_i) with the same x-coordinates, coefficient-wise.
//!
//! For prime `q_i`, each of the `N` residues `s_c mod q_i` gets an independent random polynomial
//! `f_{i,c}(x) = s_c + r_{i,c,1} x + … + r_{i,c,t−1} x^{t−1}` over GF(q_i); holder `k` receives
//! `(f_{i,c}(x_k))_{i,c}` where `x_k` is its nonzero [`ParticipantId`]. By the CRT this is a
//! sharing over `Z_Q` of the integer vector `s` by the polynomial `f_c = CRT(f_{0,c}, f_{1,c}, …)`:
//! any `t` shares reconstruct by Lagrange interpolation at 0 (per prime, [`lagrange_at_zero`]);
//! any `t − 1` shares are jointly uniform and independent of the secret, per prime and hence over
//! `Z_Q`. The x-coordinates must be distinct and nonzero modulo every prime (ids are below 2^32
//! and the primes above 2^61). As in SecAgg+ (Bell et al., CCS 2020) and the design note, `t`
//! must exceed half the holders; the announcement's collusion policy strengthens this to
//! `2t > n + c`.
//!
//! Layout: a share is `primes·N` residues, prime-major (residues mod `q_0`, then `q_1`, …).

use crate::ids::ParticipantId;
use crate::keys::RoundSecretKey;
use crate::params::SecAggContext;
use crate::ring::{add_mod, inv_mod, mul_mod, mul_mod_fast, sub_mod};
use rand::CryptoRng;
use std::collections::BTreeSet;
use tfhe_ntt::fastdiv::Div64;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Errors of secret sharing and interpolation.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShamirError {
    /// The threshold must satisfy `n/2 < t ≤ n` for `n` holders.
    #[error("threshold {threshold} invalid for {holders} holders (need holders/2 < t <= holders)")]
    BadThreshold {
        /// Requested threshold.
        threshold: usize,
        /// Number of holders.
        holders: usize,
    },
    /// A holder id (x-coordinate) is repeated.
    #[error("duplicate {0}")]
    DuplicateHolder(ParticipantId),
    /// A holder id is not a nonzero element of GF(q).
    #[error("{0} is not a valid x-coordinate mod q")]
    BadCoordinate(ParticipantId),
    /// Shares of different lengths, or of a length other than `primes·N`.
    #[error("share has {got} residues, expected {expected}")]
    BadShareLength {
        /// Expected length.
        expected: usize,
        /// Received length.
        got: usize,
    },
    /// A share residue is not reduced modulo its prime.
    #[error("share residue out of range")]
    OutOfRange,
    /// The point is not in the interpolation set.
    #[error("{0} is not in the interpolation set")]
    NotInSet(ParticipantId),
    /// Nothing to interpolate, or no (valid) moduli.
    #[error("empty interpolation set or no valid moduli")]
    Empty,
}

/// One holder's Shamir share of a round key: `primes·N` residues, prime-major. Zeroized on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct KeyShare {
    values: Vec<u64>,
}

impl std::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyShare").field("len", &self.values.len()).finish_non_exhaustive()
    }
}

/// Checks a prime-major residue vector: its length is a multiple of the number of moduli and each
/// block is reduced modulo its prime.
fn check_blocks(values: &[u64], moduli: &[u64]) -> Result<(), ShamirError> {
    if moduli.is_empty() || moduli.iter().any(|q| !(2..1 << 63).contains(q)) {
        return Err(ShamirError::Empty);
    }
    if !values.len().is_multiple_of(moduli.len()) {
        return Err(ShamirError::BadShareLength {
            expected: values.len().next_multiple_of(moduli.len()),
            got: values.len(),
        });
    }
    let n = values.len() / moduli.len();
    for (block, &q) in values.chunks(n.max(1)).zip(moduli) {
        if block.iter().any(|&v| v >= q) {
            return Err(ShamirError::OutOfRange);
        }
    }
    Ok(())
}

impl KeyShare {
    /// Wraps prime-major share residues after checking each block is reduced modulo its prime.
    ///
    /// # Errors
    /// [`ShamirError::OutOfRange`] for an unreduced value, [`ShamirError::BadShareLength`] if the
    /// length is not a multiple of the number of moduli, [`ShamirError::Empty`] for no moduli.
    pub fn from_values(values: Vec<u64>, moduli: &[u64]) -> Result<Self, ShamirError> {
        let share = Self { values };
        check_blocks(&share.values, moduli)?;
        Ok(share)
    }

    /// The share residues `(f_{i,c}(x_k))_{i,c}`, prime-major.
    pub fn values(&self) -> &[u64] {
        &self.values
    }

    /// Little-endian `u64` encoding, in a buffer zeroized on drop.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(self.values.len() * 8));
        for v in &self.values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Parses [`KeyShare::to_bytes`], checking the length is `8·primes·n` and every residue is
    /// reduced modulo its prime.
    ///
    /// # Errors
    /// [`ShamirError::BadShareLength`], [`ShamirError::OutOfRange`].
    pub fn from_bytes(bytes: &[u8], n: usize, moduli: &[u64]) -> Result<Self, ShamirError> {
        let expected = n * moduli.len();
        if bytes.len() != expected * 8 {
            return Err(ShamirError::BadShareLength { expected, got: bytes.len() / 8 });
        }
        let mut values = Vec::with_capacity(expected);
        for c in bytes.chunks_exact(8) {
            let mut b = Zeroizing::new([0u8; 8]);
            b.copy_from_slice(c);
            values.push(u64::from_le_bytes(*b));
        }
        Self::from_values(values, moduli)
    }
}

fn check_holders(holders: &[ParticipantId], q: u64) -> Result<(), ShamirError> {
    let mut seen = BTreeSet::new();
    for &h in holders {
        if u64::from(h.get()) >= q {
            return Err(ShamirError::BadCoordinate(h));
        }
        if !seen.insert(h) {
            return Err(ShamirError::DuplicateHolder(h));
        }
    }
    Ok(())
}

/// Shares `secret` (prime-major residues: `secret.len() / moduli.len()` per prime) with
/// threshold `t` among `holders`, independently per prime with the same x-coordinates.
///
/// # Errors
/// [`ShamirError::BadThreshold`] unless `holders/2 < t ≤ holders`; [`ShamirError::DuplicateHolder`],
/// [`ShamirError::BadCoordinate`], [`ShamirError::OutOfRange`], [`ShamirError::BadShareLength`],
/// [`ShamirError::Empty`] for malformed input.
///
/// # Example
/// ```
/// use cohort_crypto::{shamir, ParticipantId};
/// let q = 257;
/// let ids: Vec<_> = (1..=5).map(|i| ParticipantId::new(i).unwrap()).collect();
/// let mut rng = rand::rng();
/// let shares = shamir::share_secret(&[q], &[42, 7], 3, &ids, &mut rng).unwrap();
/// let some: Vec<_> = shares.iter().skip(2).map(|(id, s)| (*id, s)).collect();
/// assert_eq!(shamir::reconstruct(&[q], &some).unwrap(), vec![42, 7]);
/// ```
pub fn share_secret<R: CryptoRng + ?Sized>(
    moduli: &[u64],
    secret: &[u64],
    threshold: usize,
    holders: &[ParticipantId],
    rng: &mut R,
) -> Result<Vec<(ParticipantId, KeyShare)>, ShamirError> {
    if threshold == 0 || threshold > holders.len() || 2 * threshold <= holders.len() {
        return Err(ShamirError::BadThreshold { threshold, holders: holders.len() });
    }
    check_blocks(secret, moduli)?;
    for &q in moduli {
        check_holders(holders, q)?;
    }
    let n = secret.len() / moduli.len();
    // Exact capacities: no reallocation leaves unwiped copies of share values behind.
    let mut out: Vec<(ParticipantId, KeyShare)> =
        holders.iter().map(|&h| (h, KeyShare { values: Vec::with_capacity(secret.len()) })).collect();
    for (i, &q) in moduli.iter().enumerate() {
        let block = &secret[i * n..(i + 1) * n];
        let shift = q.leading_zeros();
        let d = Div64::new(q);
        // coefficients[l][c] is r_{i, c, l+1}.
        let mut coefficients: Vec<Zeroizing<Vec<u64>>> = Vec::with_capacity(threshold - 1);
        for _ in 1..threshold {
            let mut row = Zeroizing::new(Vec::with_capacity(n));
            while row.len() < n {
                let v = rng.next_u64() >> shift;
                if v < q {
                    row.push(v);
                }
            }
            coefficients.push(row);
        }
        for (h, share) in out.iter_mut() {
            let x = u64::from(h.get());
            for (c, &s) in block.iter().enumerate() {
                // Horner: ((r_{t−1} x + r_{t−2}) x + …) x + s.
                let mut acc = 0u64;
                for row in coefficients.iter().rev() {
                    acc = add_mod(mul_mod_fast(acc, x, d), row[c], q);
                }
                share.values.push(add_mod(mul_mod_fast(acc, x, d), s, q));
            }
        }
    }
    Ok(out)
}

/// Shares a round key (all its RNS residues) with threshold `t` among `holders` (see
/// [`share_secret`]); each share has `ctx.share_len()` residues.
///
/// # Errors
/// As [`share_secret`].
pub fn share_round_key<R: CryptoRng + ?Sized>(
    ctx: &SecAggContext,
    key: &RoundSecretKey,
    threshold: usize,
    holders: &[ParticipantId],
    rng: &mut R,
) -> Result<Vec<(ParticipantId, KeyShare)>, ShamirError> {
    share_secret(ctx.moduli(), key.residues(), threshold, holders, rng)
}

/// Lagrange coefficient at 0 of point `k` in the set `points` over GF(q):
/// `λ_k = Π_{m ≠ k} x_m / (x_m − x_k) mod q`.
///
/// # Errors
/// [`ShamirError::NotInSet`] if `k ∉ points`; duplicate or invalid points.
pub fn lagrange_at_zero(q: u64, points: &[ParticipantId], k: ParticipantId) -> Result<u64, ShamirError> {
    check_holders(points, q)?;
    if !points.contains(&k) {
        return Err(ShamirError::NotInSet(k));
    }
    let xk = u64::from(k.get());
    let (mut num, mut den) = (1u64, 1u64);
    for &m in points.iter().filter(|&&m| m != k) {
        let xm = u64::from(m.get());
        num = mul_mod(num, xm, q);
        den = mul_mod(den, sub_mod(xm, xk, q), q);
    }
    // den ≠ 0 because points are distinct and below q; q prime makes it invertible.
    let inv = inv_mod(den, q).ok_or(ShamirError::BadCoordinate(k))?;
    Ok(mul_mod(num, inv, q))
}

/// The Lagrange coefficients at 0 of `k` over `points`, one per prime of `moduli`.
///
/// # Errors
/// As [`lagrange_at_zero`].
pub fn lagrange_at_zero_rns(
    moduli: &[u64],
    points: &[ParticipantId],
    k: ParticipantId,
) -> Result<Vec<u64>, ShamirError> {
    moduli.iter().map(|&q| lagrange_at_zero(q, points, k)).collect()
}

/// Reconstructs the secret (prime-major residues) from shares by Lagrange interpolation at 0,
/// per prime. With fewer than `t` shares the result is a uniformly random vector unrelated to
/// the secret.
///
/// # Errors
/// [`ShamirError::Empty`], [`ShamirError::BadShareLength`] on mismatched lengths, invalid points.
pub fn reconstruct(moduli: &[u64], shares: &[(ParticipantId, &KeyShare)]) -> Result<Vec<u64>, ShamirError> {
    let first = shares.first().ok_or(ShamirError::Empty)?;
    let len = first.1.values.len();
    check_blocks(&first.1.values, moduli)?;
    let n = len / moduli.len();
    let points: Vec<ParticipantId> = shares.iter().map(|(id, _)| *id).collect();
    let mut out = vec![0u64; len];
    for (id, share) in shares {
        if share.values.len() != len {
            return Err(ShamirError::BadShareLength { expected: len, got: share.values.len() });
        }
        let lambdas = lagrange_at_zero_rns(moduli, &points, *id)?;
        for (i, (&q, &lambda)) in moduli.iter().zip(&lambdas).enumerate() {
            let range = i * n..(i + 1) * n;
            for (o, &v) in out[range.clone()].iter_mut().zip(&share.values[range]) {
                *o = add_mod(*o, mul_mod(lambda, v, q), q);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::DEFAULT_MODULI;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    const Q: u64 = DEFAULT_MODULI[0];

    fn ids(n: u32) -> Vec<ParticipantId> {
        (1..=n).map(|i| ParticipantId::new(i * 7 + 3).unwrap()).collect()
    }

    proptest! {
        /// Any t of n shares reconstruct a random RNS secret (all three primes, one to seven
        /// coefficients each), and t − 1 shares do not.
        #[test]
        fn any_t_shares_reconstruct(n in 1u32..12, seed: u64, coeffs in 1usize..8, pick: u64) {
            let t = n as usize / 2 + 1;
            let holders = ids(n);
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let secret: Vec<u64> = DEFAULT_MODULI.iter().flat_map(|&q| {
                (0..coeffs).map(|_| rand::Rng::random_range(&mut rng, 0..q)).collect::<Vec<_>>()
            }).collect();
            let shares = share_secret(&DEFAULT_MODULI, &secret, t, &holders, &mut rng).unwrap();
            prop_assert!(shares.iter().all(|(_, s)| s.values().len() == 3 * coeffs));
            // A pseudo-random subset of exactly t holders.
            let mut idx: Vec<usize> = (0..n as usize).collect();
            let mut r = ChaCha20Rng::seed_from_u64(pick);
            for i in (1..idx.len()).rev() {
                idx.swap(i, rand::Rng::random_range(&mut r, 0..=i));
            }
            let subset: Vec<_> = idx[..t].iter().map(|&i| (shares[i].0, &shares[i].1)).collect();
            prop_assert_eq!(reconstruct(&DEFAULT_MODULI, &subset).unwrap(), secret.clone());
            if t > 1 {
                prop_assert_ne!(reconstruct(&DEFAULT_MODULI, &subset[..t - 1]).unwrap(), secret);
            }
        }
    }

    /// χ² test over GF(257): the values of t − 1 = 2 shares (t = 3, n = 5) are jointly uniform,
    /// whatever the secret. 257² cells would need too many samples, so each share value is
    /// tested on its own and the pair on a 16×16 grid of their top bits.
    #[test]
    fn t_minus_one_shares_are_uniform() {
        let q = 257u64;
        let holders = ids(5);
        let mut rng = ChaCha20Rng::seed_from_u64(99);
        let samples = 60_000usize;
        for secret in [0u64, 1, 200] {
            let mut single = vec![0f64; 257];
            let mut pair = vec![0f64; 256];
            let shares = share_secret(&[q], &vec![secret; samples], 3, &holders, &mut rng).unwrap();
            let (a, b) = (&shares[1].1, &shares[3].1);
            for (&x, &y) in a.values().iter().zip(b.values()) {
                single[x as usize] += 1.0;
                pair[((x * 16 / 257) * 16 + y * 16 / 257) as usize] += 1.0;
            }
            let chi = |counts: &[f64], probs: &dyn Fn(usize) -> f64| -> f64 {
                counts
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| {
                        let e = probs(i) * samples as f64;
                        (c - e) * (c - e) / e
                    })
                    .sum()
            };
            let chi_single = chi(&single, &|_| 1.0 / 257.0);
            // Bucket b of x*16/257 holds 16 or 17 residues.
            let bucket = |b: u64| (0..257u64).filter(|x| x * 16 / 257 == b).count() as f64 / 257.0;
            let chi_pair = chi(&pair, &|i| bucket(i as u64 / 16) * bucket(i as u64 % 16));
            // 256 and 255 degrees of freedom: the 1e-4 upper quantile is about 360.
            assert!(chi_single < 360.0, "secret {secret}: chi2 single {chi_single}");
            assert!(chi_pair < 360.0, "secret {secret}: chi2 pair {chi_pair}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let h = ids(4);
        assert_eq!(
            share_secret(&[Q], &[1], 2, &h, &mut rng).unwrap_err(),
            ShamirError::BadThreshold { threshold: 2, holders: 4 }
        );
        assert_eq!(
            share_secret(&[Q], &[1], 5, &h, &mut rng).unwrap_err(),
            ShamirError::BadThreshold { threshold: 5, holders: 4 }
        );
        let dup = vec![h[0], h[1], h[0]];
        assert_eq!(share_secret(&[Q], &[1], 2, &dup, &mut rng).unwrap_err(), ShamirError::DuplicateHolder(h[0]));
        assert_eq!(share_secret(&[Q], &[Q], 3, &h, &mut rng).unwrap_err(), ShamirError::OutOfRange);
        // Residue 1 of the second prime's block is ≥ q_1.
        assert_eq!(
            share_secret(&DEFAULT_MODULI, &[0, 0, Q - 1, 0, 0, 0], 3, &h, &mut rng).unwrap_err(),
            ShamirError::OutOfRange
        );
        assert!(matches!(
            share_secret(&DEFAULT_MODULI, &[0, 0], 3, &h, &mut rng),
            Err(ShamirError::BadShareLength { .. })
        ));
        let big = ParticipantId::new(300).unwrap();
        assert_eq!(lagrange_at_zero(257, &[big], big).unwrap_err(), ShamirError::BadCoordinate(big));
        assert_eq!(lagrange_at_zero(Q, &h[..2], h[3]).unwrap_err(), ShamirError::NotInSet(h[3]));
        let share = KeyShare::from_values(vec![1, 2, 3], &DEFAULT_MODULI).unwrap();
        assert_eq!(KeyShare::from_bytes(&share.to_bytes(), 1, &DEFAULT_MODULI).unwrap(), share);
        assert!(KeyShare::from_bytes(&share.to_bytes(), 2, &DEFAULT_MODULI).is_err());
        assert!(KeyShare::from_values(vec![Q], &[Q]).is_err());
        assert!(KeyShare::from_values(vec![1, 2], &DEFAULT_MODULI).is_err());
    }
}

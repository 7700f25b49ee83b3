//! Arithmetic in `Z_q`, in the ring `Z_q[X]/(X^N + 1)`, and RNS/CRT reconstruction in `Z_Q`.
//!
//! Scalar helpers are branch-free and assume reduced inputs (`< q < 2^62`). Negacyclic products
//! use tfhe-ntt's `prime64::Plan` (a negacyclic NTT over the prime field); modular
//! multiplication of scalars uses tfhe `core_crypto`'s custom-modulus `UnsignedInteger` helpers,
//! or tfhe-ntt's precomputed-reciprocal `fastdiv::Div64` in hot loops.
//!
//! CRT reconstruction (`crt_centered`) is Garner's mixed-radix algorithm (Garner, "The residue
//! number system", IRE Trans. Electronic Computers, 1959; Knuth, TAOCP vol. 2, §4.3.2) evaluated
//! with three 64-bit limbs ([`I192`]); nothing beyond limb additions, shifts and 64×64-bit
//! products is implemented here, and the tests check it against `num-bigint`.

use crate::params::Rns;
use tfhe::core_crypto::algorithms::slice_algorithms::{
    slice_wrapping_add_assign_custom_mod, slice_wrapping_sub_assign_custom_mod,
};
use tfhe::core_crypto::commons::numeric::UnsignedInteger;
use tfhe_ntt::fastdiv::Div64;
use tfhe_ntt::prime64::Plan;

/// `(a + b) mod q` for `a, b < q < 2^63`.
#[inline(always)]
pub fn add_mod(a: u64, b: u64, q: u64) -> u64 {
    let s = a + b;
    s.min(s.wrapping_sub(q))
}

/// `(a − b) mod q` for `a, b < q < 2^63`.
#[inline(always)]
pub fn sub_mod(a: u64, b: u64, q: u64) -> u64 {
    let d = a.wrapping_sub(b);
    d.min(d.wrapping_add(q))
}

/// `(a · b) mod q` (tfhe `wrapping_mul_custom_mod`).
#[inline]
pub fn mul_mod(a: u64, b: u64, q: u64) -> u64 {
    a.wrapping_mul_custom_mod(b, q)
}

/// `a^e mod q` by square and multiply.
pub fn pow_mod(mut a: u64, mut e: u64, q: u64) -> u64 {
    let mut r = 1 % q;
    a %= q;
    while e > 0 {
        if e & 1 == 1 {
            r = mul_mod(r, a, q);
        }
        a = mul_mod(a, a, q);
        e >>= 1;
    }
    r
}

/// Inverse of `a` modulo the prime `q` (Fermat), `None` if `a ≡ 0` or the result does not check.
pub fn inv_mod(a: u64, q: u64) -> Option<u64> {
    let a = a % q;
    if a == 0 {
        return None;
    }
    let inv = pow_mod(a, q - 2, q);
    (mul_mod(inv, a, q) == 1).then_some(inv)
}

/// Maps a signed integer into `Z_q` (`x mod q`, nonnegative representative).
#[inline(always)]
pub fn from_signed(x: i64, q: u64) -> u64 {
    let r = (i128::from(x)).rem_euclid(i128::from(q));
    r as u64
}

/// Centered lift of `x ∈ Z_q` to `(−q/2, q/2]`.
#[inline(always)]
pub fn to_centered(x: u64, q: u64) -> i64 {
    if x > q / 2 { -((q - x) as i64) } else { x as i64 }
}

/// `lhs += rhs (mod q)` coefficient-wise (tfhe `slice_wrapping_add_assign_custom_mod`).
///
/// # Panics
/// If the slices differ in length (a programming error of the caller).
pub fn poly_add_assign(lhs: &mut [u64], rhs: &[u64], q: u64) {
    slice_wrapping_add_assign_custom_mod(lhs, rhs, q);
}

/// `lhs −= rhs (mod q)` coefficient-wise (tfhe `slice_wrapping_sub_assign_custom_mod`).
///
/// # Panics
/// If the slices differ in length (a programming error of the caller).
pub fn poly_sub_assign(lhs: &mut [u64], rhs: &[u64], q: u64) {
    slice_wrapping_sub_assign_custom_mod(lhs, rhs, q);
}

/// Negacyclic product `lhs · rhs mod (X^N + 1, q)` through the NTT.
///
/// # Panics
/// If the slice lengths differ from the plan's `N` (a programming error of the caller).
pub fn negacyclic_mul(plan: &Plan, lhs: &[u64], rhs: &[u64]) -> Vec<u64> {
    let mut a = lhs.to_vec();
    let mut b = rhs.to_vec();
    plan.fwd(&mut a);
    plan.fwd(&mut b);
    plan.mul_assign_normalize(&mut a, &b);
    plan.inv(&mut a);
    a
}

/// Given `a_hat` (an NTT-domain polynomial) and `s_hat = NTT(s)`, overwrites `a_hat` with the
/// coefficients of `a · s`, where `a = NTT^{-1}(a_hat)`. One pointwise product and one inverse NTT.
///
/// # Panics
/// If the slice lengths differ from the plan's `N` (a programming error of the caller).
#[inline]
pub fn mul_ntt_into_coefficients(plan: &Plan, a_hat: &mut [u64], s_hat: &[u64]) {
    plan.mul_assign_normalize(a_hat, s_hat);
    plan.inv(a_hat);
}

/// `(a · b) mod q` with tfhe-ntt's precomputed reciprocal of `q` (`a, b < q < 2^62`).
#[inline(always)]
pub(crate) fn mul_mod_fast(a: u64, b: u64, d: Div64) -> u64 {
    Div64::rem_u128(u128::from(a) * u128::from(b), d)
}

/// A signed integer `x mod q` as its nonnegative representative, for `|x| < 2^127`.
#[inline(always)]
pub(crate) fn reduce_i128(x: i128, d: Div64) -> u64 {
    let r = Div64::rem_u128(x.unsigned_abs(), d);
    if x < 0 && r != 0 { d.divisor() - r } else { r }
}

/// A 192-bit integer in three little-endian 64-bit limbs, used modulo 2^192 (unsigned, or two's
/// complement where stated). Only what Garner's CRT and the rounding by Δ need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct I192(pub [u64; 3]);

impl I192 {
    /// `x` (unsigned).
    pub const fn from_u64(x: u64) -> Self {
        Self([x, 0, 0])
    }

    /// `x` sign-extended to 192 bits (two's complement).
    pub const fn from_i128(x: i128) -> Self {
        let fill = if x < 0 { u64::MAX } else { 0 };
        Self([x as u64, (x >> 64) as u64, fill])
    }

    /// `self · m + a mod 2^192`.
    #[inline(always)]
    pub fn mul_add_u64(self, m: u64, a: u64) -> Self {
        let mut out = [0u64; 3];
        let mut carry = u128::from(a);
        for (o, &l) in out.iter_mut().zip(&self.0) {
            let t = u128::from(l) * u128::from(m) + carry;
            *o = t as u64;
            carry = t >> 64;
        }
        Self(out)
    }

    /// `self + rhs mod 2^192`.
    #[inline(always)]
    pub fn wrapping_add(self, rhs: Self) -> Self {
        let (a0, c0) = self.0[0].overflowing_add(rhs.0[0]);
        let (a1, c1a) = self.0[1].overflowing_add(rhs.0[1]);
        let (a1, c1b) = a1.overflowing_add(u64::from(c0));
        let a2 = self.0[2].wrapping_add(rhs.0[2]).wrapping_add(u64::from(c1a | c1b));
        Self([a0, a1, a2])
    }

    /// `self − rhs mod 2^192`.
    #[inline(always)]
    pub fn wrapping_sub(self, rhs: Self) -> Self {
        let (a0, b0) = self.0[0].overflowing_sub(rhs.0[0]);
        let (a1, b1a) = self.0[1].overflowing_sub(rhs.0[1]);
        let (a1, b1b) = a1.overflowing_sub(u64::from(b0));
        let a2 = self.0[2].wrapping_sub(rhs.0[2]).wrapping_sub(u64::from(b1a | b1b));
        Self([a0, a1, a2])
    }

    /// Logical shift right by one.
    pub fn shr1(self) -> Self {
        let l = self.0;
        Self([(l[0] >> 1) | (l[1] << 63), (l[1] >> 1) | (l[2] << 63), l[2] >> 1])
    }

    /// Unsigned comparison `self > rhs`.
    #[inline(always)]
    pub fn gt_unsigned(self, rhs: Self) -> bool {
        (self.0[2], self.0[1], self.0[0]) > (rhs.0[2], rhs.0[1], rhs.0[0])
    }

    /// `2^k` for `k < 192`.
    pub const fn pow2(k: u32) -> Self {
        let mut l = [0u64; 3];
        l[(k / 64) as usize] = 1 << (k % 64);
        Self(l)
    }

    /// Reading `self` as a two's-complement value `X`, writes `X = P·2^d + e` with
    /// `e ∈ [−2^(d−1), 2^(d−1))` (rounding to the nearest multiple of `2^d`, ties up) and returns
    /// `(P, e)`, or `None` if `P` does not fit an `i128`. `1 ≤ d ≤ 126`.
    #[inline]
    pub fn round_shift(self, d: u32) -> Option<(i128, i128)> {
        debug_assert!((1..=126).contains(&d));
        let x = self.wrapping_add(Self::pow2(d - 1));
        let fill = if (x.0[2] as i64) < 0 { u64::MAX } else { 0 };
        let ext = [x.0[0], x.0[1], x.0[2], fill, fill];
        let (q, r) = ((d / 64) as usize, d % 64);
        let limb = |i: usize| {
            if r == 0 { ext[i + q] } else { (ext[i + q] >> r) | (ext[i + q + 1] << (64 - r)) }
        };
        let (p0, p1, p2) = (limb(0), limb(1), limb(2));
        if p2 != if (p1 as i64) < 0 { u64::MAX } else { 0 } {
            return None;
        }
        let p = ((u128::from(p1) << 64) | u128::from(p0)) as i128;
        let low = (u128::from(x.0[1]) << 64) | u128::from(x.0[0]);
        let rem = low & ((1u128 << d) - 1);
        Some((p, rem as i128 - (1i128 << (d - 1))))
    }
}

/// Garner's CRT: the value `X ∈ (−Q/2, Q/2]` (two's complement) with `X ≡ r_i (mod q_i)`, for
/// reduced residues `r_i` (one per prime of `rns`).
#[inline]
pub(crate) fn crt_centered(rns: &Rns, residues: &[u64]) -> I192 {
    // Mixed-radix digits v_i: X = v_0 + q_0·(v_1 + q_1·(v_2 + …)), 0 ≤ v_i < q_i.
    let mut v = [0u64; crate::params::MAX_PRIMES];
    let k = rns.moduli.len();
    for (i, &r) in residues.iter().enumerate().take(k) {
        let (qi, di) = (rns.moduli[i], rns.div[i]);
        let mut x = r;
        let (done, rest) = v.split_at_mut(i);
        for (&vj, &inv) in done.iter().zip(&rns.garner[i]) {
            // v_j < q_j < 2^62 and q_i > 2^61 in practice; reduce it mod q_i in general.
            let vj = if vj >= qi { vj % qi } else { vj };
            x = mul_mod_fast(sub_mod(x, vj, qi), inv, di);
        }
        rest[0] = x;
    }
    let mut acc = I192::from_u64(v[k - 1]);
    for i in (0..k - 1).rev() {
        acc = acc.mul_add_u64(rns.moduli[i], v[i]);
    }
    if acc.gt_unsigned(rns.half_q) { acc.wrapping_sub(rns.q) } else { acc }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{DEFAULT_MODULI, SecAggParams};
    use num_bigint::{BigInt, BigUint};
    const Q: u64 = DEFAULT_MODULI[0];
    use proptest::prelude::*;

    fn schoolbook(a: &[u64], b: &[u64], q: u64) -> Vec<u64> {
        let n = a.len();
        let mut out = vec![0u64; n];
        for (i, &ai) in a.iter().enumerate() {
            for (j, &bj) in b.iter().enumerate() {
                let p = mul_mod(ai, bj, q);
                let k = i + j;
                if k < n {
                    out[k] = add_mod(out[k], p, q);
                } else {
                    out[k - n] = sub_mod(out[k - n], p, q);
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn ntt_product_matches_schoolbook(a in proptest::collection::vec(0..Q, 32), b in proptest::collection::vec(0..Q, 32)) {
            let plan = Plan::try_new(32, Q).unwrap();
            prop_assert_eq!(negacyclic_mul(&plan, &a, &b), schoolbook(&a, &b, Q));
            let mut a_hat = a.clone();
            plan.fwd(&mut a_hat);
            let mut b_hat = b.clone();
            plan.fwd(&mut b_hat);
            mul_ntt_into_coefficients(&plan, &mut a_hat, &b_hat);
            prop_assert_eq!(a_hat, schoolbook(&a, &b, Q));
        }

        #[test]
        fn scalar_ops(a in 0..Q, b in 0..Q, x in -(1i64 << 61)..(1i64 << 61)) {
            prop_assert_eq!(u128::from(add_mod(a, b, Q)), (u128::from(a) + u128::from(b)) % u128::from(Q));
            prop_assert_eq!(add_mod(sub_mod(a, b, Q), b, Q), a);
            prop_assert_eq!(to_centered(from_signed(x, Q), Q), x);
            if a != 0 {
                prop_assert_eq!(mul_mod(inv_mod(a, Q).unwrap(), a, Q), 1);
            }
        }
    }

    fn to_bigint(x: I192) -> BigInt {
        let u = BigUint::from(x.0[0]) + (BigUint::from(x.0[1]) << 64) + (BigUint::from(x.0[2]) << 128);
        if (x.0[2] as i64) < 0 { BigInt::from(u) - (BigInt::from(1) << 192) } else { BigInt::from(u) }
    }

    proptest! {
        /// CRT round trip against num-bigint: any X in (−Q/2, Q/2] reduced per prime and
        /// reconstructed by Garner comes back exactly.
        #[test]
        fn crt_round_trip(limbs in proptest::array::uniform3(any::<u64>()), small: i128, pick: bool) {
            let ctx = SecAggParams::toy_insecure(16).build().unwrap();
            let rns = ctx.rns();
            let q = BigInt::from(DEFAULT_MODULI.iter().map(|&q| BigUint::from(q)).product::<BigUint>());
            let raw = BigInt::from(BigUint::from(limbs[0]) + (BigUint::from(limbs[1]) << 64) + (BigUint::from(limbs[2] >> 7) << 128));
            // Either a huge value mod Q or a small signed one.
            let x = if pick { BigInt::from(small) } else { raw % &q - (&q >> 1u32) };
            let residues: Vec<u64> = DEFAULT_MODULI.iter().map(|&m| {
                let r = ((&x % BigInt::from(m)) + BigInt::from(m)) % BigInt::from(m);
                u64::try_from(r).unwrap()
            }).collect();
            let back = crt_centered(rns, &residues);
            let mut expect = x.clone();
            if expect > (&q - 1) / 2 { expect -= &q; }
            let lo: BigInt = -((&q + BigInt::from(1)) / BigInt::from(2));
            if expect <= lo { expect += &q; }
            prop_assert_eq!(to_bigint(back), expect);
        }

        /// Rounding by 2^d against num-bigint (floor division of X + 2^(d−1)).
        #[test]
        fn round_shift_matches_bigint(p in any::<i64>(), hi: i32, e in any::<i128>(), d in 1u32..=96) {
            let p = (i128::from(p) << 32) | i128::from(hi as u32);
            let half = 1i128 << (d - 1);
            let e = e.rem_euclid(2 * half) - half;
            let x = BigInt::from(p) * (BigInt::from(1) << d) + BigInt::from(e);
            let limbs = {
                let m = (BigInt::from(1) << 192u32) + &x;
                let m = BigUint::try_from(m % (BigInt::from(1) << 192u32)).unwrap();
                let d = m.to_u64_digits();
                I192([d.first().copied().unwrap_or(0), d.get(1).copied().unwrap_or(0), d.get(2).copied().unwrap_or(0)])
            };
            prop_assert_eq!(to_bigint(limbs), x);
            prop_assert_eq!(limbs.round_shift(d), Some((p, e)));
            prop_assert_eq!(I192::from_i128(p).wrapping_sub(I192::from_i128(e)).wrapping_add(I192::from_i128(e)), I192::from_i128(p));
        }

        #[test]
        fn fast_reductions(a in 0..Q, b in 0..Q, x: i128) {
            let d = Div64::new(Q);
            prop_assert_eq!(mul_mod_fast(a, b, d), mul_mod(a, b, Q));
            prop_assert_eq!(reduce_i128(x >> 1, d) as i128, (x >> 1).rem_euclid(i128::from(Q)));
        }
    }

    #[test]
    fn round_shift_overflow_is_detected() {
        let big = I192([0, 0, 1 << 40]);
        assert_eq!(big.round_shift(10), None);
        assert!(big.round_shift(110).is_some());
        assert_eq!(I192::from_i128(-5).round_shift(1), Some((-2, -1)));
    }

    #[test]
    fn poly_add_sub_round_trip() {
        let mut a = vec![Q - 1, 5, 0];
        let b = vec![3, Q - 2, 7];
        poly_add_assign(&mut a, &b, Q);
        assert_eq!(a, vec![2, 3, 7]);
        poly_sub_assign(&mut a, &b, Q);
        assert_eq!(a, vec![Q - 1, 5, 0]);
        assert_eq!(inv_mod(0, Q), None);
    }
}

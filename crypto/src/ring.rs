//! Arithmetic in `Z_q` and in the ring `Z_q[X]/(X^N + 1)`.
//!
//! Scalar helpers are branch-free and assume reduced inputs (`< q < 2^62`). Negacyclic products
//! use tfhe-ntt's `prime64::Plan` (a negacyclic NTT over the prime field); modular
//! multiplication of scalars uses tfhe `core_crypto`'s custom-modulus `UnsignedInteger` helpers.

use tfhe::core_crypto::algorithms::slice_algorithms::{
    slice_wrapping_add_assign_custom_mod, slice_wrapping_sub_assign_custom_mod,
};
use tfhe::core_crypto::commons::numeric::UnsignedInteger;
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
    if x > q / 2 {
        -((q - x) as i64)
    } else {
        x as i64
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::DEFAULT_MODULUS as Q;
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

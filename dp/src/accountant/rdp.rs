//! Rényi-DP accountant for the Poisson-subsampled Gaussian mechanism.
//!
//! - Per-step RDP: Mironov, Talwar and Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian
//!   Mechanism", Section 3.3. For integer orders α, `A_α = Σ_{i=0..α} C(α,i) q^i (1−q)^{α−i} exp((i²−i)/(2σ²))`;
//!   for fractional orders, the two convergent series with `erfc` terms (their Eq. (3)–(4)), summed until both
//!   terms fall below e^−30. RDP is `ln(A_α)/(α−1)`. All sums run in log space (log-sum-exp with signed terms),
//!   exactly as `dp-accounting`'s `rdp_privacy_accountant._compute_log_a_int` / `_compute_log_a_frac`.
//! - Special cases as `dp-accounting`: σ = 0 gives +∞; q = 1 is the plain Gaussian, `α/(2σ²)`. One deliberate
//!   difference: q = 0 gives 0 even when σ = 0 (no record is ever used; `dp-accounting` returns +∞ there).
//! - Composition: RDP adds over steps at each order (Mironov 2017, Proposition 1).
//! - Conversion: Balle, Barthe, Gaboardi, Hsu and Sato 2020, Theorem 21,
//!   `ε = r + ln(1 − 1/α) − ln(δ·α)/(α−1)`, minimized over orders and clamped at 0, with the KL shortcut
//!   `δ² + expm1(−r) > 0 ⇒ ε = 0` and orders α ≤ 1.01 skipped, exactly as `dp-accounting`'s `compute_epsilon`;
//!   the inverse as its `compute_delta`.

use std::f64::consts::{LN_2, PI};

use super::{AccountantError, Delta, Epsilon, NoiseMultiplier, SampleRate, SampledGaussian};

/// The RDP orders of `dp-accounting` (`DEFAULT_RDP_ORDERS`): 1.1 to 10.9 by 0.1, 11 to 63, then 128, 256, 512
/// and 1024 (156 orders).
#[must_use]
pub fn orders() -> Vec<f64> {
    let mut o: Vec<f64> = (1..100).map(|x| 1.0 + f64::from(x) / 10.0).collect();
    o.extend((11..64).map(f64::from));
    o.extend([128.0, 256.0, 512.0, 1024.0]);
    o
}

/// `ln(e^x + e^y)`.
fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = if x < y { (x, y) } else { (y, x) };
    if a == f64::NEG_INFINITY { b } else { (a - b).exp().ln_1p() + b }
}

/// `ln(e^x − e^y)` for `x ≥ y`; −∞ when `x ≤ y` (the terms cancel).
fn log_sub(x: f64, y: f64) -> f64 {
    if y == f64::NEG_INFINITY {
        return x;
    }
    if x <= y {
        return f64::NEG_INFINITY;
    }
    let d = (x - y).exp_m1();
    if d.is_finite() { d.ln() + y } else { x }
}

/// `ln erfc(x)`, accurate in the far tail where `erfc` underflows (asymptotic series, relative error < 1e-12
/// for x > 25).
fn log_erfc(x: f64) -> f64 {
    if x <= 25.0 {
        return libm::erfc(x).ln();
    }
    // erfc(x) = exp(−x²)/(x√π) · (1 − 1/(2x²) + 3/(2x²)² − 15/(2x²)³ + 105/(2x²)⁴ − …)
    let u = 1.0 / (2.0 * x * x);
    let series = 1.0 - u * (1.0 - 3.0 * u * (1.0 - 5.0 * u * (1.0 - 7.0 * u * (1.0 - 9.0 * u))));
    -x * x - x.ln() - 0.5 * PI.ln() + series.ln()
}

/// `ln C(n, k)` via log-gamma (`scipy.special.gammaln` in `dp-accounting`).
fn log_comb(n: f64, k: f64) -> f64 {
    libm::lgamma(n + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(n - k + 1.0)
}

/// `ln A_α` for integer α ≥ 2 and 0 < q < 1.
fn log_a_int(q: f64, sigma: f64, alpha: u32) -> f64 {
    let (ln_q, ln_1q) = (q.ln(), (-q).ln_1p());
    let a = f64::from(alpha);
    let mut log_a = f64::NEG_INFINITY;
    for i in 0..=alpha {
        let fi = f64::from(i);
        let log_coef = log_comb(a, fi) + fi * ln_q + (a - fi) * ln_1q;
        log_a = log_add(log_a, log_coef + (fi * fi - fi) / (2.0 * sigma * sigma));
    }
    log_a
}

/// Upper limit on the terms of the fractional series; reached only for parameters where the series has not
/// converged, which then yields +∞ (no guarantee claimed) rather than an underestimate.
const MAX_FRACTIONAL_TERMS: u32 = 1_000_000;

/// `ln A_α` for fractional α > 1 and 0 < q < 1.
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (ln_q, ln_1q) = (q.ln(), (-q).ln_1p());
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let s2 = std::f64::consts::SQRT_2 * sigma;
    // Generalized binomial coefficient C(α, i) as log-magnitude and sign: C(α, i+1) = C(α, i)·(α − i)/(i + 1).
    let (mut log_coef, mut positive) = (0.0f64, true);
    for i in 0..MAX_FRACTIONAL_TERMS {
        let fi = f64::from(i);
        let j = alpha - fi;
        let log_t0 = log_coef + fi * ln_q + j * ln_1q;
        let log_t1 = log_coef + j * ln_q + fi * ln_1q;
        let log_e0 = -LN_2 + log_erfc((fi - z0) / s2);
        let log_e1 = -LN_2 + log_erfc((z0 - j) / s2);
        let log_s0 = log_t0 + (fi * fi - fi) / (2.0 * sigma * sigma) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
        if positive {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            log_a0 = log_sub(log_a0, log_s0);
            log_a1 = log_sub(log_a1, log_s1);
        }
        if log_s0.max(log_s1) < -30.0 {
            return log_add(log_a0, log_a1);
        }
        let factor = (alpha - fi) / (fi + 1.0);
        log_coef += factor.abs().ln();
        if factor < 0.0 {
            positive = !positive;
        }
    }
    f64::INFINITY
}

/// Per-step RDP at order `alpha` with validated parameters.
fn rdp_one(q: SampleRate, sigma: NoiseMultiplier, alpha: f64) -> f64 {
    let (q, sigma) = (q.get(), sigma.get());
    if q == 0.0 {
        0.0
    } else if sigma == 0.0 || alpha.is_infinite() {
        f64::INFINITY
    } else if q == 1.0 {
        alpha / (2.0 * sigma * sigma)
    } else if alpha.fract() == 0.0 && alpha <= f64::from(u32::MAX) {
        // `alpha` is an integer in range, so the cast is exact.
        log_a_int(q, sigma, alpha as u32) / (alpha - 1.0)
    } else {
        log_a_frac(q, sigma, alpha) / (alpha - 1.0)
    }
}

/// RDP of one step of the sampled Gaussian mechanism at order `alpha`, from raw numbers.
///
/// # Errors
/// [`AccountantError`] for `q` outside [0, 1], σ negative or not finite, or `alpha` not > 1
/// ([`AccountantError::InvalidCurve`]).
///
/// # Example
/// ```
/// // dp-accounting 0.6.0: 1.718134e-04 at q = 0.01, σ = 1, α = 2.
/// let r = cohort_dp::accountant::rdp_step(0.01, 1.0, 2.0).unwrap();
/// assert!((r - 1.718134e-4).abs() < 1e-9);
/// ```
pub fn rdp_step(q: f64, sigma: f64, alpha: f64) -> Result<f64, AccountantError> {
    let (q, sigma) = SampledGaussian { q, sigma, steps: 1 }.validate()?;
    if alpha.is_nan() || alpha <= 1.0 {
        return Err(AccountantError::InvalidCurve("RDP orders must be > 1"));
    }
    Ok(rdp_one(q, sigma, alpha))
}

/// ε at `delta` from an RDP curve (`rdp[k]` at `orders[k]`), as `dp-accounting`'s `compute_epsilon`: the
/// smallest Balle et al. 2020 bound over the orders, clamped at 0; +∞ when no order gives a finite bound.
///
/// # Errors
/// [`AccountantError::Delta`] for δ outside (0, 1); [`AccountantError::InvalidCurve`] for curves of different
/// lengths, orders < 1 or negative or NaN RDP values.
pub fn epsilon_from_rdp(orders: &[f64], rdp: &[f64], delta: f64) -> Result<f64, AccountantError> {
    let delta = Delta::new(delta)?;
    check_curve(orders, rdp)?;
    Ok(epsilon_and_order(orders, rdp, delta).0.get())
}

fn check_curve(orders: &[f64], rdp: &[f64]) -> Result<(), AccountantError> {
    if orders.len() != rdp.len() {
        return Err(AccountantError::InvalidCurve("orders and RDP values differ in length"));
    }
    if orders.iter().any(|&a| a.is_nan() || a < 1.0) {
        return Err(AccountantError::InvalidCurve("RDP orders must be ≥ 1"));
    }
    if rdp.iter().any(|&r| r.is_nan() || r < 0.0) {
        return Err(AccountantError::InvalidCurve("RDP values must be ≥ 0"));
    }
    Ok(())
}

/// Balle et al. 2020 conversion; `orders` ≥ 1 and `rdp` ≥ 0 (checked by callers).
fn epsilon_and_order(orders: &[f64], rdp: &[f64], delta: Delta) -> (Epsilon, f64) {
    let delta = delta.get();
    let mut best = (f64::INFINITY, f64::NAN);
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = if delta * delta + (-r).exp_m1() > 0.0 {
            // KL bound: δ ≤ sqrt(1 − exp(−r)) already holds with ε = 0.
            0.0
        } else if a > 1.01 {
            // Not numerically stable as α → 1, and useless there anyway.
            r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
        } else {
            f64::INFINITY
        };
        if eps < best.0 || best.1.is_nan() {
            best = (eps, a);
        }
    }
    // NaN cannot arise from the checked inputs; treat it as "no guarantee" to stay safe.
    let eps = if best.0.is_nan() { f64::INFINITY } else { best.0.max(0.0) };
    (Epsilon(eps), best.1)
}

/// Balle et al. 2020 conversion the other way (`dp-accounting`'s `compute_delta`): the smallest δ over the
/// orders, also bounded through KL by `sqrt(1 − e^−r)`; at most 1.
fn delta_from_curve(orders: &[f64], rdp: &[f64], epsilon: Epsilon) -> f64 {
    let eps = epsilon.get();
    let mut best = f64::INFINITY;
    for (&a, &r) in orders.iter().zip(rdp) {
        let mut log_delta = if r == 0.0 { f64::NEG_INFINITY } else { 0.5 * (-(-r).exp()).ln_1p() };
        if a > 1.01 {
            let bound = (a - 1.0) * (r - eps + (-1.0 / a).ln_1p()) - a.ln();
            log_delta = log_delta.min(bound);
        }
        if log_delta < best {
            best = log_delta;
        }
    }
    if best.is_nan() { 1.0 } else { best.exp().min(1.0) }
}

/// An RDP accountant: the composed RDP curve of any sequence of Poisson-subsampled Gaussian mechanisms, at the
/// `dp-accounting` orders ([`orders`]).
///
/// # Example
/// ```
/// use cohort_dp::accountant::*;
/// let mut acc = RdpAccountant::new();
/// acc.compose(SampleRate::new(0.01)?, NoiseMultiplier::new(1.0)?, 600);
/// acc.compose(SampleRate::new(0.01)?, NoiseMultiplier::new(1.0)?, 400);
/// let eps = acc.epsilon(Delta::new(1e-5)?);
/// assert!((eps.get() - 2.1014).abs() < 1e-3);
/// // And back: δ at that ε is (up to rounding) the δ asked for.
/// assert!((acc.delta(eps) / 1e-5 - 1.0).abs() < 1e-6);
/// # Ok::<(), AccountantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RdpAccountant {
    orders: Vec<f64>,
    rdp: Vec<f64>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl RdpAccountant {
    /// An accountant that has composed nothing (ε = 0).
    #[must_use]
    pub fn new() -> Self {
        let orders = orders();
        let rdp = vec![0.0; orders.len()];
        Self { orders, rdp }
    }

    /// Adds `steps` steps of the Gaussian mechanism with noise multiplier `sigma` on Poisson samples of rate `q`.
    pub fn compose(&mut self, q: SampleRate, sigma: NoiseMultiplier, steps: u64) -> &mut Self {
        if steps == 0 {
            return self;
        }
        // u64 → f64 rounds above 2^53 steps, far beyond any real schedule.
        let steps = steps as f64;
        for (total, &a) in self.rdp.iter_mut().zip(&self.orders) {
            *total += rdp_one(q, sigma, a) * steps;
        }
        self
    }

    /// Adds an event given as raw numbers.
    ///
    /// # Errors
    /// [`AccountantError::SampleRate`] or [`AccountantError::NoiseMultiplier`] for a value out of range; the
    /// accountant is then unchanged.
    pub fn compose_event(&mut self, event: &SampledGaussian) -> Result<&mut Self, AccountantError> {
        let (q, sigma) = event.validate()?;
        Ok(self.compose(q, sigma, event.steps))
    }

    /// The orders of the curve.
    #[must_use]
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The composed RDP at each of [`orders`](Self::orders).
    #[must_use]
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// The ε guaranteed at `delta` (Balle et al. 2020); +∞ if no order gives a finite bound.
    #[must_use]
    pub fn epsilon(&self, delta: Delta) -> Epsilon {
        epsilon_and_order(&self.orders, &self.rdp, delta).0
    }

    /// The ε at `delta` and the order that attains it.
    #[must_use]
    pub fn epsilon_and_order(&self, delta: Delta) -> (Epsilon, f64) {
        epsilon_and_order(&self.orders, &self.rdp, delta)
    }

    /// The δ guaranteed at `epsilon` (the inverse conversion); in [0, 1].
    #[must_use]
    pub fn delta(&self, epsilon: Epsilon) -> f64 {
        delta_from_curve(&self.orders, &self.rdp, epsilon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(q: f64, sigma: f64, steps: u64) -> f64 {
        let mut acc = RdpAccountant::new();
        acc.compose(SampleRate::new(q).unwrap(), NoiseMultiplier::new(sigma).unwrap(), steps);
        acc.epsilon(Delta::new(1e-5).unwrap()).get()
    }

    #[test]
    fn matches_dp_accounting_reference_values() {
        // dp-accounting 0.6.0, RDP, δ = 1e-5 (shared/design/privacy.md).
        let cases = [
            (256.0 / 60000.0, 1.1, 14063, 2.5967),
            (0.01, 1.0, 1000, 2.1014),
            (0.001, 0.8, 10000, 1.3838),
            (1.0, 5.0, 10, 2.8137),
        ];
        for (q, sigma, steps, expected) in cases {
            let got = eps(q, sigma, steps);
            println!("RDP q={q:.6} σ={sigma} T={steps}: ε = {got:.6} (dp-accounting {expected})");
            assert!((got - expected).abs() < 1e-3, "q={q} σ={sigma} T={steps}: {got} vs {expected}");
        }
    }

    #[test]
    fn per_step_rdp_matches_reference_orders() {
        let (r2, r8) = (rdp_step(0.01, 1.0, 2.0).unwrap(), rdp_step(0.01, 1.0, 8.0).unwrap());
        println!("per-step RDP q=0.01 σ=1: α=2 {r2:.6e} (ref 1.718134e-04), α=8 {r8:.6e} (ref 8.936439e-04)");
        assert!((r2 - 1.718134e-4).abs() < 1e-9);
        assert!((r8 - 8.936439e-4).abs() < 1e-9);
    }

    #[test]
    fn integer_order_closed_form_for_alpha_two() {
        // A_2 = 1 + q²(e^{1/σ²} − 1), so RDP(2) = ln(1 + q²(e^{1/σ²} − 1)).
        for (q, s) in [(0.01f64, 1.0f64), (0.3, 0.7), (0.9, 2.0)] {
            let expected = (q * q * (1.0 / (s * s)).exp_m1()).ln_1p();
            let got = rdp_step(q, s, 2.0).unwrap();
            assert!((got - expected).abs() < 1e-12 * expected.max(1.0), "{got} vs {expected}");
        }
    }

    #[test]
    fn fractional_orders_are_continuous_and_monotone() {
        // RDP is non-decreasing in α and continuous: fractional orders just off an integer agree with it, and
        // a fractional order lies between its integer neighbours.
        for (q, s) in [(0.01, 1.0), (0.1, 0.8), (0.3, 2.0), (0.001, 0.5), (0.9, 1.5)] {
            for a in [2.0, 3.0, 5.0, 8.0] {
                let (lo, mid, hi) =
                    (rdp_step(q, s, a).unwrap(), rdp_step(q, s, a + 0.5).unwrap(), rdp_step(q, s, a + 1.0).unwrap());
                assert!(lo <= mid * (1.0 + 1e-9) && mid <= hi * (1.0 + 1e-9), "q={q} σ={s} α={a}: {lo} {mid} {hi}");
                let near = rdp_step(q, s, a + 1e-7).unwrap();
                assert!((near - lo).abs() <= 1e-4 * lo + 1e-12, "q={q} σ={s} α={a}: {near} vs {lo}");
            }
        }
    }

    #[test]
    fn sampled_rdp_is_at_most_full_batch_rdp() {
        for a in orders() {
            for (q, s) in [(0.5, 1.0), (0.05, 0.6)] {
                let r = rdp_step(q, s, a).unwrap();
                assert!(r.is_finite() && r >= 0.0 && r <= a / (2.0 * s * s) * (1.0 + 1e-9), "α={a}: {r}");
            }
        }
    }

    #[test]
    fn degenerate_cases() {
        assert_eq!(eps(0.0, 1.0, 100), 0.0);
        assert_eq!(eps(0.0, 0.0, 100), 0.0);
        assert_eq!(eps(0.01, 0.0, 1), f64::INFINITY);
        assert_eq!(eps(0.01, 0.0, 0), 0.0);
        assert_eq!(eps(0.5, 1.0, 0), 0.0);
        // Huge noise: the KL shortcut gives exactly 0.
        assert_eq!(eps(0.01, 1e4, 1), 0.0);
        assert!(matches!(rdp_step(0.1, 1.0, 1.0), Err(AccountantError::InvalidCurve(_))));
        assert!(matches!(rdp_step(0.1, -1.0, 2.0), Err(AccountantError::NoiseMultiplier(_))));
        assert!(matches!(epsilon_from_rdp(&[2.0], &[0.1, 0.2], 1e-5), Err(AccountantError::InvalidCurve(_))));
        assert!(matches!(epsilon_from_rdp(&[2.0], &[f64::NAN], 1e-5), Err(AccountantError::InvalidCurve(_))));
        assert!(matches!(epsilon_from_rdp(&[2.0], &[0.1], 0.0), Err(AccountantError::Delta(_))));
    }

    #[test]
    fn composition_is_additive() {
        let (q, s) = (SampleRate::new(0.02).unwrap(), NoiseMultiplier::new(1.2).unwrap());
        let mut split = RdpAccountant::new();
        split.compose(q, s, 300).compose(q, s, 700);
        let mut whole = RdpAccountant::new();
        whole.compose(q, s, 1000);
        for (a, b) in split.rdp().iter().zip(whole.rdp()) {
            assert!((a - b).abs() <= 1e-12 * b.max(1.0));
        }
        // Heterogeneous events cost more than either alone.
        let d = Delta::new(1e-5).unwrap();
        let mut both = whole.clone();
        both.compose(SampleRate::new(1.0).unwrap(), NoiseMultiplier::new(5.0).unwrap(), 10);
        assert!(both.epsilon(d) > whole.epsilon(d));
    }

    #[test]
    fn delta_inverts_epsilon() {
        let mut acc = RdpAccountant::new();
        acc.compose(SampleRate::new(0.01).unwrap(), NoiseMultiplier::new(1.0).unwrap(), 1000);
        for d in [1e-3, 1e-5, 1e-8] {
            let e = acc.epsilon(Delta::new(d).unwrap());
            let back = acc.delta(e);
            assert!((back / d - 1.0).abs() < 1e-6, "δ={d}: ε={e} → δ={back}");
        }
        assert_eq!(acc.delta(Epsilon::INFINITY), 0.0);
        let mut inf = RdpAccountant::new();
        inf.compose(SampleRate::new(0.1).unwrap(), NoiseMultiplier::new(0.0).unwrap(), 1);
        assert_eq!(inf.delta(Epsilon::new(10.0).unwrap()), 1.0);
    }

    proptest::proptest! {
        #[test]
        fn epsilon_is_monotone(q in 0.001f64..1.0, s in 0.5f64..5.0, steps in 1u64..2000) {
            let base = eps(q, s, steps);
            proptest::prop_assert!(base.is_finite() && base >= 0.0);
            proptest::prop_assert!(eps(q, s * 1.1, steps) <= base + 1e-9);
            proptest::prop_assert!(eps(q, s, steps + 100) >= base - 1e-9);
            proptest::prop_assert!(eps((q * 0.9).max(0.0), s, steps) <= base + 1e-9);
        }
    }
}

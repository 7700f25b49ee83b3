//! Privacy loss distribution (PLD) accountant for the Poisson-subsampled Gaussian mechanism, add/remove
//! neighbours, with pessimistic discretization: every ε it returns is a rigorous upper bound on the exact ε
//! (up to floating-point rounding, see below).
//!
//! # What is computed
//! The PLD of a pair of output distributions (P, Q) is the law of the privacy loss ln(p(o)/q(o)) for o ~ P; the
//! hockey-stick divergence, i.e. the δ of (ε, δ)-DP, is δ(ε) = P[L = ∞] + E[(1 − e^{ε − L})₊], and the PLD of a
//! composition is the convolution of the PLDs (Sommer, Meiser and Mohammadi 2019, "Privacy Loss Classes: The
//! Central Limit Theorem in Differential Privacy"; Koskela, Jälkö and Honkela 2020, "Computing Tight
//! Differential Privacy Guarantees Using FFT"). Behaviour follows Google's `dp-accounting` 0.6
//! (`pld/privacy_loss_distribution.py`, `pld/pld_pmf.py`, `pld/common.py`, `pld/privacy_loss_mechanism.py`) and
//! its `PLDAccountant(value_discretization_interval = 1e-4)` with the default `ADD_OR_REMOVE_ONE` relation:
//!
//! - **Both directions.** With Poisson sampling at rate q < 1 the "remove" pair
//!   (P, Q) = ((1−q)·N(0, σ²) + q·N(−1, σ²), N(0, σ²)) and the "add" pair
//!   (N(0, σ²), (1−q)·N(0, σ²) + q·N(1, σ²)) have different PLDs. Each is composed on its own and the
//!   reported δ(ε) is the larger of the two, ε(δ) the larger of the two ε (as `dp-accounting`). At q = 1 they
//!   coincide and one is kept.
//! - **Discretization: connect the dots** (Doroshenko, Ghazi, Kamath, Kumar and Manurangsi, PETS 2022,
//!   "Connect the Dots: Tighter Discrete Approximations of Privacy Loss Distributions", Algorithm 1, the
//!   fixed-gap form of `create_pmf_pessimistic_connect_dots_fixed_gap`). The exact δ(ε) of one step is
//!   evaluated in closed form at every grid point εᵢ = i·Δ (Δ = [`DEFAULT_DISCRETIZATION`] = 1e-4) between the
//!   losses at the x-truncation ±9.745σ (mass e^−50, as `dp-accounting`) and the discrete PLD is chosen whose
//!   δ-curve passes through those points and is affine in e^ε in between. The exact curve is convex in e^ε, so the
//!   discrete PLD *dominates* the exact one (δ pointwise ≥), and the mass beyond the last point goes to +∞:
//!   pessimistic. Plain pessimistic rounding ("privacy buckets", every loss rounded up to the grid) is also a
//!   valid upper bound, but it shifts every step's loss by up to Δ and so ε by up to steps·Δ/2 after
//!   composition (0.7 at 14 063 steps): far off the target accuracy; connect the dots keeps the mean and is
//!   within about 1e-4 of the exact ε here.
//! - **Composition** by FFT: `steps` self-compositions raise the discrete Fourier transform to the power
//!   `steps` (`common.self_convolve`; one forward and one inverse transform instead of log₂(steps) squarings),
//!   on an output window chosen by a Chernoff bound on the discrete PMF (`compute_self_convolve_bounds`) so that
//!   at most τ = 1e-15 of the mass lies outside; distinct events and pure releases are convolved. Truncation
//!   is pessimistic: mass cut above the window counts fully into δ (it goes to +∞, τ is added to the mass at
//!   +∞), mass cut below is moved up into the window. Dominance is preserved by composition, so the composed
//!   discrete PLD dominates the exact composed PLD.
//! - **Queries**: δ(ε) is the hockey-stick divergence of the discrete PLD, exactly; ε(δ) is the smallest ε ≥ 0
//!   with δ(ε) ≤ δ, solved exactly between grid points (`_get_epsilon_for_delta`).
//! - **Pure ε-DP releases** ([`PrivacyLossDistribution::pure`]) enter as the two-point PLD of randomized
//!   response (`from_privacy_parameters(ε, 0)`: losses ±ε rounded up to the grid, masses e^ε/(1+e^ε) and
//!   1/(1+e^ε)), which dominates every ε-DP mechanism (Kairouz, Oh and Viswanath 2015, "The Composition Theorem
//!   for Differential Privacy", Theorem 4 with δ = 0; Zhu, Dong and Wang 2022, "Optimal Accounting of
//!   Differential Privacy via Characteristic Function", dominating pairs).
//!
//! # Guarantee and its limits
//! In exact arithmetic each discrete PLD dominates its mechanism, composition and truncation keep dominance, and
//! the queries are exact on the discrete PLD, so the returned ε is ≥ the exact ε of the composed mechanism. In
//! floating point the δ-curve, the FFT and the sums carry rounding errors around 1e-16 of the total mass per
//! grid point (negative FFT outputs are clamped to 0, which only raises δ); against δ ≥ 1e-12 they are
//! immaterial. The tests check the bound against the exact Gaussian (Balle and Wang 2018, Theorem 8) at q = 1.
//!
//! A grid that would exceed [`MAX_POINTS`] points (only at tiny σ with many steps, where ε is in the hundreds)
//! is made coarser by doubling Δ until it fits; that ε is still an upper bound, only a looser one. Past
//! Δ = 1000 (absurd step counts such as 10^12) the answer is ε = +∞, no guarantee claimed.

use std::collections::BTreeMap;
use std::f64::consts::SQRT_2;
use std::sync::{Arc, Mutex};

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use super::{AccountantError, Delta, Epsilon, NoiseMultiplier, SampleRate, SampledGaussian};

/// The discretization interval Δ of the privacy losses: `dp-accounting`'s default
/// `value_discretization_interval`.
pub const DEFAULT_DISCRETIZATION: f64 = 1e-4;

/// Mass that composition may cut from the tails of a PMF, counted into δ (`dp-accounting`'s
/// `tail_mass_truncation`).
pub const TAIL_MASS_TRUNCATION: f64 = 1e-15;

/// Largest number of grid points of one PMF or one FFT; beyond it Δ is doubled (see the module docs).
pub const MAX_POINTS: usize = 1 << 22;

/// The coarsest Δ the doubling goes to; a PLD that does not fit even then (e.g. 10^12 steps) is reported as
/// no guarantee (ε = +∞), which is still an upper bound.
const COARSEST_DISCRETIZATION: f64 = 1e3;

/// −Φ⁻¹(e^−50 / 2): the noise is truncated at ±this many σ (`dp-accounting`'s `log_mass_truncation_bound`
/// = −50, `GaussianPrivacyLoss.privacy_loss_tail`). `scipy.stats.norm.ppf(0.5 * exp(-50))` = −9.745474864965935.
const X_TRUNCATION: f64 = 9.745474864965935;

/// Which neighbouring pair a one-directional PLD describes (`dp-accounting`'s `AdjacencyType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Adjacency {
    /// P = M(D), Q = M(D'), where D' has one record fewer than D.
    Remove,
    /// P = M(D), Q = M(D'), where D' has one record more than D.
    Add,
}

/// A discrete privacy loss distribution: mass `probs[i]` at loss `(lower + i)·Δ`, plus mass at +∞.
#[derive(Debug, Clone, PartialEq)]
pub struct PldPmf {
    discretization: f64,
    lower: i64,
    probs: Vec<f64>,
    infinity_mass: f64,
}

/// The PMF did not fit in [`MAX_POINTS`].
#[derive(Debug)]
struct TooLarge;

/// A forward and an inverse transform of one length.
type Plans = (Arc<dyn Fft<f64>>, Arc<dyn Fft<f64>>);

/// Finished plans by length, shared by every thread (a plan is immutable and `Send + Sync`). Each length is
/// planned by a fresh [`FftPlanner`]: rustfft's planner builds a new length on the sub-transforms it already
/// caches (`avx_planner.rs`, `replan_with_cache`), so a shared planner would make the decomposition, and the last
/// bits of every ε, depend on what was planned before.
static PLANS: Mutex<BTreeMap<usize, Plans>> = Mutex::new(BTreeMap::new());

/// The transforms of length `len`, the same on every call on this machine (see [`PLANS`]).
fn plans(len: usize) -> Plans {
    // A poisoned cache only means another thread panicked while planning: the map itself is still sound.
    let mut plans = PLANS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // A plan holds twiddle tables of about its length: bound the lengths kept, so that a process accounting for
    // many nodes (a simulation) does not keep a plan for every node's sampling rate. Planning again is
    // deterministic (a fresh planner per length), so dropping plans changes no ε.
    if !plans.contains_key(&len) && plans.keys().sum::<usize>() + len > PLAN_CACHE_POINTS {
        plans.clear();
    }
    plans
        .entry(len)
        .or_insert_with(|| (FftPlanner::new().plan_fft_forward(len), FftPlanner::new().plan_fft_inverse(len)))
        .clone()
}

/// The total length of the transforms [`PLANS`] keeps (2²², about 64 MiB of twiddles per direction at most).
const PLAN_CACHE_POINTS: usize = 1 << 22;

/// The smallest 2^a·3^b·5^c ≥ n (sizes rustfft transforms fastest).
fn fast_len(n: usize) -> usize {
    let n = n.max(1);
    let mut best = n.next_power_of_two();
    let mut p5 = 1usize;
    while p5 < best {
        let mut p35 = p5;
        while p35 < best {
            let mut v = p35;
            while v < n {
                v *= 2;
            }
            best = best.min(v);
            p35 *= 3;
        }
        p5 *= 5;
    }
    best
}

/// Φ(x), the standard normal CDF (relative accuracy in the lower tail).
fn norm_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / SQRT_2)
}

/// δ(ℓ) of the Gaussian mechanism N(0, σ²) vs N(1, σ²) (Balle and Wang 2018, Theorem 8):
/// Φ(1/(2σ) − ℓσ) − e^ℓ·Φ(−1/(2σ) − ℓσ).
fn gaussian_delta(sigma: f64, loss: f64) -> f64 {
    if loss == f64::NEG_INFINITY {
        return 1.0;
    }
    let h = 0.5 / sigma;
    let a = norm_cdf(h - loss * sigma);
    let b = norm_cdf(-h - loss * sigma);
    (a - loss.exp() * b).clamp(0.0, 1.0)
}

/// ln(1 − q + q·e^b) (`common.log_a_times_exp_b_plus_c(q, b, 1 − q)`).
fn log_mix(q: f64, b: f64) -> f64 {
    if b > 0.0 { b + q.ln() + ((1.0 - q) / q * (-b).exp()).ln_1p() } else { (q * b.exp_m1()).ln_1p() }
}

/// The sampled Gaussian's privacy loss at x for the remove direction: ln(1 − q + q·exp((−1/2 − x)/σ²)).
fn loss_remove(q: f64, sigma: f64, x: f64) -> f64 {
    let b = (-0.5 - x) / (sigma * sigma);
    if q == 1.0 { b } else { log_mix(q, b) }
}

/// Exact δ(ε) of one step of the sampled Gaussian in one direction (`AdditiveNoisePrivacyLoss
/// .get_delta_for_epsilon`), rewritten through the Gaussian δ to avoid cancellation:
/// remove: q·δ_G(ln(1 + (e^ε − 1)/q)); add: (1 − (1−q)e^ε)·δ_G(−ln(1 + (e^−ε − 1)/q)).
fn sampled_gaussian_delta(q: f64, sigma: f64, adjacency: Adjacency, eps: f64) -> f64 {
    if q == 1.0 {
        return gaussian_delta(sigma, eps);
    }
    let d = match adjacency {
        Adjacency::Remove => {
            if eps <= (-q).ln_1p() {
                -eps.exp_m1()
            } else {
                q * gaussian_delta(sigma, (eps.exp_m1() / q).ln_1p())
            }
        }
        Adjacency::Add => {
            if eps >= -(-q).ln_1p() {
                0.0
            } else {
                let m = ((-eps).exp_m1() / q).ln_1p();
                -(eps + (-q).ln_1p()).exp_m1() * gaussian_delta(sigma, -m)
            }
        }
    };
    d.clamp(0.0, 1.0)
}

impl PldPmf {
    /// The PLD of a mechanism that reveals nothing: all mass at loss 0.
    #[must_use]
    pub fn identity(discretization: f64) -> Self {
        Self { discretization, lower: 0, probs: vec![1.0], infinity_mass: 0.0 }
    }

    /// The PLD of a mechanism with no guarantee: all mass at +∞.
    #[must_use]
    pub fn non_private(discretization: f64) -> Self {
        Self { discretization, lower: 0, probs: vec![0.0], infinity_mass: 1.0 }
    }

    /// The discretization interval Δ.
    #[must_use]
    pub fn discretization(&self) -> f64 {
        self.discretization
    }

    /// The grid index of the first mass: `probs()[i]` sits at loss `(lower_index() + i)·Δ`.
    #[must_use]
    pub fn lower_index(&self) -> i64 {
        self.lower
    }

    /// The masses on the grid.
    #[must_use]
    pub fn probs(&self) -> &[f64] {
        &self.probs
    }

    /// The mass at +∞ (counted fully into every δ).
    #[must_use]
    pub fn infinity_mass(&self) -> f64 {
        self.infinity_mass
    }

    fn is_non_private(&self) -> bool {
        self.infinity_mass >= 1.0
    }

    fn loss(&self, i: usize) -> f64 {
        (self.lower + i as i64) as f64 * self.discretization
    }

    /// Connect-the-dots PMF of one step of the Poisson-subsampled Gaussian in one direction
    /// (`_create_pld_pmf_from_monotone_privacy_loss` with `use_connect_dots = True`); 0 < q ≤ 1, σ > 0.
    fn sampled_gaussian(q: f64, sigma: f64, adjacency: Adjacency, discretization: f64) -> Result<Self, TooLarge> {
        // Remove: x ∈ [−zσ − 1, zσ]; the loss decreases in x. Add is the mirror image: its losses are the
        // negated remove losses at −x, so its bounds are the negated remove bounds.
        let top = loss_remove(q, sigma, -X_TRUNCATION * sigma - 1.0);
        let bottom = loss_remove(q, sigma, X_TRUNCATION * sigma);
        let (eps_upper, eps_lower) = match adjacency {
            Adjacency::Remove => (top, bottom),
            Adjacency::Add => (-bottom, -top),
        };
        let lo = (eps_lower / discretization).floor();
        let hi = (eps_upper / discretization).ceil();
        let span = hi - lo;
        if span.is_nan() || span >= MAX_POINTS as f64 {
            return Err(TooLarge);
        }
        // Both are integers of magnitude < 2^53 here, so the casts are exact.
        let (lo, hi) = (lo as i64, hi as i64);
        let n = (hi - lo + 1) as usize;
        let mut deltas: Vec<f64> =
            (lo..=hi).map(|i| sampled_gaussian_delta(q, sigma, adjacency, i as f64 * discretization)).collect();
        // δ is non-increasing in ε; enforce it against rounding (`np.minimum.accumulate`).
        for i in 1..n {
            deltas[i] = deltas[i].min(deltas[i - 1]);
        }
        let infinity_mass = deltas[n - 1];
        if n == 1 {
            return Ok(Self { discretization, lower: lo, probs: vec![1.0 - deltas[0]], infinity_mass });
        }
        let (em1, e) = (discretization.exp_m1(), discretization.exp());
        let mut probs = vec![0.0; n];
        probs[0] = 1.0 - deltas[0] + (deltas[1] - deltas[0]) / em1;
        for i in 1..n - 1 {
            probs[i] = ((deltas[i + 1] - deltas[i]) - (deltas[i] - deltas[i - 1]) * e) / em1;
        }
        probs[n - 1] = (deltas[n - 1] - deltas[n - 2]) / (-discretization).exp_m1();
        for p in &mut probs {
            *p = p.max(0.0);
        }
        Ok(Self { discretization, lower: lo, probs, infinity_mass })
    }

    /// Two-point PLD dominating every ε-DP mechanism (`from_privacy_parameters(ε, δ = 0)`).
    fn pure(epsilon: f64, discretization: f64) -> Self {
        let up = (epsilon / discretization).ceil();
        let down = (-epsilon / discretization).ceil();
        // |ε/Δ| is checked < MAX_POINTS by the caller.
        let (up, down) = (up as i64, down as i64);
        let mut probs = vec![0.0; (up - down + 1) as usize];
        probs[(up - down) as usize] += 1.0 / (1.0 + (-epsilon).exp());
        probs[0] += 1.0 / (1.0 + epsilon.exp());
        Self { discretization, lower: down, probs, infinity_mass: 0.0 }
    }

    /// δ(ε) of this discrete PLD: `infinity_mass + Σ_{loss > ε} p·(1 − e^{ε − loss})`.
    #[must_use]
    pub fn delta_for_epsilon(&self, epsilon: f64) -> f64 {
        if epsilon == f64::INFINITY {
            return self.infinity_mass;
        }
        let mut d = self.infinity_mass;
        for (i, &p) in self.probs.iter().enumerate().rev() {
            let l = self.loss(i);
            if l <= epsilon {
                break;
            }
            d += -(epsilon - l).exp_m1() * p;
        }
        d.min(1.0)
    }

    /// The smallest ε ≥ 0 with δ(ε) ≤ `delta` (+∞ when the mass at +∞ exceeds δ), exactly on this discrete PLD
    /// (`_get_epsilon_for_delta`).
    #[must_use]
    pub fn epsilon_for_delta(&self, delta: f64) -> f64 {
        if self.infinity_mass > delta {
            return f64::INFINITY;
        }
        let (mut upper, mut lower) = (self.infinity_mass, 0.0f64);
        for (i, &p) in self.probs.iter().enumerate().rev() {
            let l = self.loss(i);
            if upper > delta && lower > 0.0 && ((upper - delta) / lower).ln() >= l {
                break;
            }
            upper += p;
            lower += (-l).exp() * p;
            if upper >= delta && lower == 0.0 {
                return l.max(0.0);
            }
        }
        if upper <= lower + delta { 0.0 } else { ((upper - delta) / lower).ln().max(0.0) }
    }

    /// The composition of two PLDs: their convolution, tails beyond τ/2 on each side cut pessimistically
    /// (`DensePLDPmf.compose` with `_truncate_tails`).
    fn compose(&self, other: &Self, tail_mass_truncation: f64) -> Result<Self, TooLarge> {
        let d = self.discretization;
        if self.is_non_private() || other.is_non_private() {
            return Ok(Self::non_private(d));
        }
        let (a, b) = (&self.probs, &other.probs);
        let n = a.len() + b.len() - 1;
        if n > MAX_POINTS {
            return Err(TooLarge);
        }
        let mut probs = if a.len().min(b.len()) <= 64 {
            let mut out = vec![0.0; n];
            for (i, &x) in a.iter().enumerate() {
                if x != 0.0 {
                    for (o, &y) in out[i..].iter_mut().zip(b) {
                        *o += x * y;
                    }
                }
            }
            out
        } else {
            let len = fast_len(n);
            let (fwd, inv) = plans(len);
            let mut fa: Vec<Complex<f64>> = a.iter().map(|&x| Complex::new(x, 0.0)).collect();
            fa.resize(len, Complex::new(0.0, 0.0));
            let mut fb: Vec<Complex<f64>> = b.iter().map(|&x| Complex::new(x, 0.0)).collect();
            fb.resize(len, Complex::new(0.0, 0.0));
            fwd.process(&mut fa);
            fwd.process(&mut fb);
            for (x, y) in fa.iter_mut().zip(&fb) {
                *x *= y;
            }
            inv.process(&mut fa);
            let scale = 1.0 / len as f64;
            fa[..n].iter().map(|c| (c.re * scale).max(0.0)).collect()
        };
        let infinity = self.infinity_mass + other.infinity_mass - self.infinity_mass * other.infinity_mass;
        let (offset, right_mass) = truncate_tails(&mut probs, tail_mass_truncation);
        Ok(Self {
            discretization: d,
            lower: self.lower + other.lower + offset,
            probs,
            infinity_mass: infinity + right_mass,
        })
    }

    /// `times`-fold self-composition by one FFT power on a Chernoff-bounded window (`DensePLDPmf.self_compose`
    /// and `common.self_convolve`).
    fn self_compose(&self, times: u64, tail_mass_truncation: f64) -> Result<Self, TooLarge> {
        if times == 1 {
            return Ok(self.clone());
        }
        if self.is_non_private() {
            return Ok(self.clone());
        }
        let n = self.probs.len();
        let t = times as f64;
        let (lo, hi) = self_convolve_bounds(&self.probs, times, tail_mass_truncation);
        let out_len = hi - lo + 1.0;
        if !(out_len > 0.0 && out_len < MAX_POINTS as f64) {
            return Err(TooLarge);
        }
        // Both bounds are integers in [0, (n − 1)·times] and the window is < MAX_POINTS.
        let (lo, out_len) = (lo as i64, out_len as usize);
        let len = fast_len(out_len.max(n));
        let (fwd, inv) = plans(len);
        let mut f: Vec<Complex<f64>> = self.probs.iter().map(|&x| Complex::new(x, 0.0)).collect();
        f.resize(len, Complex::new(0.0, 0.0));
        fwd.process(&mut f);
        for x in &mut f {
            *x = complex_pow(*x, times);
        }
        inv.process(&mut f);
        let scale = 1.0 / len as f64;
        let start = lo.rem_euclid(len as i64) as usize;
        let probs: Vec<f64> = (0..out_len).map(|k| (f[(start + k) % len].re * scale).max(0.0)).collect();
        let infinity_mass = tail_mass_truncation - (t * (-self.infinity_mass).ln_1p()).exp_m1();
        let times_i = i64::try_from(times).map_err(|_| TooLarge)?;
        let lower = self.lower.checked_mul(times_i).ok_or(TooLarge)? + lo;
        Ok(Self { discretization: self.discretization, lower, probs, infinity_mass: infinity_mass.min(1.0) })
    }
}

/// z^n by binary exponentiation.
fn complex_pow(mut z: Complex<f64>, mut n: u64) -> Complex<f64> {
    let mut acc = Complex::new(1.0, 0.0);
    while n > 0 {
        if n & 1 == 1 {
            acc *= z;
        }
        z *= z;
        n >>= 1;
    }
    acc
}

/// Chernoff bounds (in index units, as f64 integers) on the `times`-fold convolution of `probs` such that at
/// most τ/2 lies below `lo` and at most τ/2 above `hi` (`common.compute_self_convolve_bounds`, orders ±k/n for
/// k = 1..20).
fn self_convolve_bounds(probs: &[f64], times: u64, tail_mass_truncation: f64) -> (f64, f64) {
    let n = probs.len();
    let t = times as f64;
    let mut upper = (n as f64 - 1.0) * t;
    let mut lower = 0.0f64;
    let log_tail = (2.0 / tail_mass_truncation).ln();
    for k in (-20i32..=20).filter(|&k| k != 0) {
        let order = f64::from(k) / n as f64;
        // Σ p_i e^{order·i}; |order·i| ≤ 20, so no overflow. The weight is recomputed exactly every 256 terms.
        let ratio = order.exp();
        let mut sum = 0.0;
        let mut w = 1.0;
        for (i, &p) in probs.iter().enumerate() {
            if i % 256 == 0 {
                w = (order * i as f64).exp();
            }
            sum += p * w;
            w *= ratio;
        }
        let bound = (t * sum.ln() + log_tail) / order;
        if !bound.is_finite() {
            continue;
        }
        if k > 0 {
            upper = upper.min(bound.ceil());
        } else {
            lower = lower.max(bound.floor());
        }
    }
    (lower, upper.max(lower))
}

/// Cuts the longest prefix and suffix of mass ≤ τ/2 each: the prefix is added to the first kept point, the
/// suffix returned (it goes to +∞). Returns (prefix length, suffix mass).
fn truncate_tails(probs: &mut Vec<f64>, tail_mass_truncation: f64) -> (i64, f64) {
    if tail_mass_truncation == 0.0 || probs.is_empty() {
        return (0, 0.0);
    }
    let half = tail_mass_truncation / 2.0;
    let prefix = |it: &mut dyn Iterator<Item = f64>| {
        let mut s = 0.0;
        let mut count = 0usize;
        for v in it {
            s += v;
            if s > half {
                break;
            }
            count += 1;
        }
        count
    };
    let n = probs.len();
    let left = prefix(&mut probs.iter().copied()).min(n - 1);
    let right = (n - prefix(&mut probs.iter().rev().copied())).max(left + 1).min(n);
    let left_mass: f64 = probs[..left].iter().sum();
    let right_mass: f64 = probs[right..].iter().sum();
    probs.truncate(right);
    probs.drain(..left);
    probs[0] += left_mass;
    (left as i64, right_mass)
}

/// The PLDs of a mechanism for both directions of add/remove (`dp-accounting`'s `PrivacyLossDistribution`):
/// δ(ε) is the larger of the two, ε(δ) the larger of the two.
///
/// # Example
/// ```
/// use cohort_dp::accountant::pld::{PrivacyLossDistribution, DEFAULT_DISCRETIZATION};
/// // The Gaussian mechanism with σ = 5 composed 10 times (q = 1): exactly a Gaussian with μ = √10/5.
/// let one = PrivacyLossDistribution::sampled_gaussian(1.0, 5.0, DEFAULT_DISCRETIZATION);
/// let eps = one.self_compose(10).epsilon_for_delta(1e-5);
/// assert!((eps - 2.5944).abs() < 1e-3); // dp-accounting 0.6.0 and the exact value agree
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PrivacyLossDistribution {
    remove: PldPmf,
    /// `None` when the add direction equals the remove direction.
    add: Option<PldPmf>,
}

impl PrivacyLossDistribution {
    /// Nothing released.
    #[must_use]
    pub fn identity(discretization: f64) -> Self {
        Self { remove: PldPmf::identity(discretization), add: None }
    }

    /// No guarantee at all: every δ(ε) is 1.
    #[must_use]
    pub fn non_private(discretization: f64) -> Self {
        Self { remove: PldPmf::non_private(discretization), add: None }
    }

    /// One step of the Poisson-subsampled Gaussian with rate `q` and noise multiplier `sigma` (sensitivity 1),
    /// discretized with interval `discretization` by connect the dots. q = 0 gives the identity, σ = 0 (with
    /// q > 0) no guarantee. Values outside q ∈ [0, 1], σ ≥ 0, Δ > 0 are clamped to the nearest case.
    #[must_use]
    pub fn sampled_gaussian(q: f64, sigma: f64, discretization: f64) -> Self {
        let mut d = discretization;
        loop {
            match Self::try_sampled_gaussian(q, sigma, d) {
                Ok(p) => return p,
                Err(TooLarge) if d < COARSEST_DISCRETIZATION => d *= 2.0,
                Err(TooLarge) => return Self::non_private(d),
            }
        }
    }

    fn try_sampled_gaussian(q: f64, sigma: f64, d: f64) -> Result<Self, TooLarge> {
        if q.is_nan() || q <= 0.0 {
            return Ok(Self::identity(d));
        }
        if sigma.is_nan() || sigma <= 0.0 {
            return Ok(Self { remove: PldPmf::non_private(d), add: None });
        }
        let q = q.min(1.0);
        let remove = PldPmf::sampled_gaussian(q, sigma, Adjacency::Remove, d)?;
        let add = if q == 1.0 { None } else { Some(PldPmf::sampled_gaussian(q, sigma, Adjacency::Add, d)?) };
        Ok(Self { remove, add })
    }

    /// A pure ε-DP release: the randomized-response PLD of [module docs](self) (symmetric). ε = +∞ gives no
    /// guarantee.
    #[must_use]
    pub fn pure(epsilon: f64, discretization: f64) -> Self {
        let ratio = epsilon / discretization;
        if epsilon.is_nan() || epsilon == f64::INFINITY || ratio.is_nan() || ratio >= MAX_POINTS as f64 / 2.0 {
            return Self { remove: PldPmf::non_private(discretization), add: None };
        }
        Self { remove: PldPmf::pure(epsilon.max(0.0), discretization), add: None }
    }

    /// The remove-direction PLD.
    #[must_use]
    pub fn remove(&self) -> &PldPmf {
        &self.remove
    }

    /// The add-direction PLD (the same as [`remove`](Self::remove) when the mechanism is symmetric).
    #[must_use]
    pub fn add(&self) -> &PldPmf {
        self.add.as_ref().unwrap_or(&self.remove)
    }

    /// The discretization interval.
    #[must_use]
    pub fn discretization(&self) -> f64 {
        self.remove.discretization
    }

    fn try_compose(&self, other: &Self) -> Result<Self, TooLarge> {
        let remove = self.remove.compose(&other.remove, TAIL_MASS_TRUNCATION)?;
        let add = if self.add.is_none() && other.add.is_none() {
            None
        } else {
            Some(self.add().compose(other.add(), TAIL_MASS_TRUNCATION)?)
        };
        Ok(Self { remove, add })
    }

    fn try_self_compose(&self, times: u64) -> Result<Self, TooLarge> {
        if times == 0 {
            return Ok(Self::identity(self.discretization()));
        }
        let remove = self.remove.self_compose(times, TAIL_MASS_TRUNCATION)?;
        let add = match &self.add {
            None => None,
            Some(a) => Some(a.self_compose(times, TAIL_MASS_TRUNCATION)?),
        };
        Ok(Self { remove, add })
    }

    /// The composition with `other` (same discretization).
    ///
    /// # Panics
    /// If the discretizations differ, or the result would exceed [`MAX_POINTS`] points (build through
    /// [`PldAccountant`], which coarsens the grid instead).
    #[must_use]
    pub fn compose(&self, other: &Self) -> Self {
        assert_eq!(self.discretization(), other.discretization(), "PLDs of different discretizations");
        self.try_compose(other).expect("composed PLD exceeds MAX_POINTS; use PldAccountant")
    }

    /// `times`-fold self-composition.
    ///
    /// # Panics
    /// If the result would exceed [`MAX_POINTS`] points (build through [`PldAccountant`] instead).
    #[must_use]
    pub fn self_compose(&self, times: u64) -> Self {
        self.try_self_compose(times).expect("composed PLD exceeds MAX_POINTS; use PldAccountant")
    }

    /// δ(ε): the larger of the two directions.
    #[must_use]
    pub fn delta_for_epsilon(&self, epsilon: f64) -> f64 {
        let r = self.remove.delta_for_epsilon(epsilon);
        self.add.as_ref().map_or(r, |a| r.max(a.delta_for_epsilon(epsilon)))
    }

    /// ε(δ): the larger of the two directions.
    #[must_use]
    pub fn epsilon_for_delta(&self, delta: f64) -> f64 {
        let r = self.remove.epsilon_for_delta(delta);
        self.add.as_ref().map_or(r, |a| r.max(a.epsilon_for_delta(delta)))
    }
}

/// A PLD accountant: composes Poisson-subsampled Gaussian events and pure ε-DP releases, and answers ε(δ) and
/// δ(ε). Events are kept as a multiset (equal (q, σ) merged, in a canonical order), so the result does not depend
/// on the order they were added in, and the PLD is built when queried.
///
/// # Example
/// ```
/// use cohort_dp::accountant::*;
/// let mut acc = PldAccountant::new();
/// acc.compose(SampleRate::new(0.01)?, NoiseMultiplier::new(1.0)?, 1000);
/// let eps = acc.epsilon(Delta::new(1e-5)?);
/// assert!((eps.get() - 1.8282).abs() < 0.01); // dp-accounting 0.6.0 PLDAccountant: 1.828244
/// assert!(acc.delta(eps) <= 1e-5 * (1.0 + 1e-9));
/// # Ok::<(), AccountantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PldAccountant {
    discretization: f64,
    /// (q bits, σ bits) → steps, for q > 0 and steps > 0.
    gaussians: BTreeMap<(u64, u64), u64>,
    /// ε bits → count.
    pure: BTreeMap<u64, u64>,
}

impl Default for PldAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl PldAccountant {
    /// An accountant at Δ = [`DEFAULT_DISCRETIZATION`] that has composed nothing.
    #[must_use]
    pub fn new() -> Self {
        Self { discretization: DEFAULT_DISCRETIZATION, gaussians: BTreeMap::new(), pure: BTreeMap::new() }
    }

    /// An accountant at discretization interval Δ (smaller is tighter and slower; every Δ gives an upper bound).
    ///
    /// # Errors
    /// [`AccountantError::Discretization`] unless 0 < Δ ≤ 1 (finite).
    pub fn with_discretization(discretization: f64) -> Result<Self, AccountantError> {
        if !(discretization > 0.0 && discretization <= 1.0) {
            return Err(AccountantError::Discretization(discretization));
        }
        Ok(Self { discretization, ..Self::new() })
    }

    /// The discretization interval asked for.
    #[must_use]
    pub fn discretization(&self) -> f64 {
        self.discretization
    }

    /// Adds `steps` steps of the Gaussian mechanism with noise multiplier `sigma` on Poisson samples of rate `q`.
    pub fn compose(&mut self, q: SampleRate, sigma: NoiseMultiplier, steps: u64) -> &mut Self {
        // +0.0 folds −0.0 into 0.0, so equal values have equal keys.
        let (q, sigma) = (q.get() + 0.0, sigma.get() + 0.0);
        if steps > 0 && q > 0.0 {
            let s = self.gaussians.entry((q.to_bits(), sigma.to_bits())).or_insert(0);
            *s = s.saturating_add(steps);
        }
        self
    }

    /// Adds an event given as raw numbers.
    ///
    /// # Errors
    /// [`AccountantError::SampleRate`] or [`AccountantError::NoiseMultiplier`]; the accountant is then unchanged.
    pub fn compose_event(&mut self, event: &SampledGaussian) -> Result<&mut Self, AccountantError> {
        let (q, sigma) = event.validate()?;
        Ok(self.compose(q, sigma, event.steps))
    }

    /// Adds a pure ε-DP release (ε = +∞: no guarantee).
    pub fn compose_pure(&mut self, epsilon: Epsilon) -> &mut Self {
        let c = self.pure.entry((epsilon.get() + 0.0).to_bits()).or_insert(0);
        *c = c.saturating_add(1);
        self
    }

    /// The sampled Gaussian events, merged by (q, σ), in canonical order: (q, σ, total steps).
    pub(crate) fn gaussian_groups(&self) -> impl Iterator<Item = (f64, f64, u64)> + '_ {
        self.gaussians.iter().map(|(&(q, s), &t)| (f64::from_bits(q), f64::from_bits(s), t))
    }

    /// The pure releases, merged by ε, in canonical order: (ε, count).
    pub(crate) fn pure_groups(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.pure.iter().map(|(&e, &c)| (f64::from_bits(e), c))
    }

    /// Whether nothing has been composed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.gaussians.is_empty() && self.pure.is_empty()
    }

    /// The composed PLD of everything added.
    #[must_use]
    pub fn pld(&self) -> PrivacyLossDistribution {
        self.plds().1
    }

    /// The composed PLD of the sampled Gaussian events alone, and of everything added. Δ is doubled until
    /// every PMF fits in [`MAX_POINTS`].
    pub(crate) fn plds(&self) -> (PrivacyLossDistribution, PrivacyLossDistribution) {
        let mut d = self.discretization;
        loop {
            match self.try_plds(d) {
                Ok(both) => return both,
                Err(TooLarge) if d < COARSEST_DISCRETIZATION => d *= 2.0,
                Err(TooLarge) => {
                    let none = PrivacyLossDistribution::non_private(d);
                    return (none.clone(), none);
                }
            }
        }
    }

    fn try_plds(&self, d: f64) -> Result<(PrivacyLossDistribution, PrivacyLossDistribution), TooLarge> {
        let mut acc: Option<PrivacyLossDistribution> = None;
        for (&(q, sigma), &steps) in &self.gaussians {
            let one = PrivacyLossDistribution::try_sampled_gaussian(f64::from_bits(q), f64::from_bits(sigma), d)?;
            let composed = one.try_self_compose(steps)?;
            acc = Some(match acc {
                None => composed,
                Some(a) => a.try_compose(&composed)?,
            });
        }
        let gaussian = acc.unwrap_or_else(|| PrivacyLossDistribution::identity(d));
        let mut full = gaussian.clone();
        for (&eps, &count) in &self.pure {
            let eps = f64::from_bits(eps);
            if eps.is_finite() && eps / d >= MAX_POINTS as f64 / 2.0 {
                return Err(TooLarge);
            }
            let composed = PrivacyLossDistribution::pure(eps, d).try_self_compose(count)?;
            full = full.try_compose(&composed)?;
        }
        Ok((gaussian, full))
    }

    /// The ε guaranteed at `delta`; +∞ if there is no finite bound (σ = 0).
    #[must_use]
    pub fn epsilon(&self, delta: Delta) -> Epsilon {
        if self.is_empty() {
            return Epsilon::ZERO;
        }
        Epsilon(self.pld().epsilon_for_delta(delta.get()))
    }

    /// The δ guaranteed at `epsilon`; in [0, 1].
    #[must_use]
    pub fn delta(&self, epsilon: Epsilon) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        self.pld().delta_for_epsilon(epsilon.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(q: f64, sigma: f64, steps: u64, delta: f64) -> f64 {
        let mut acc = PldAccountant::new();
        acc.compose(SampleRate::new(q).unwrap(), NoiseMultiplier::new(sigma).unwrap(), steps);
        acc.epsilon(Delta::new(delta).unwrap()).get()
    }

    /// The ε of one account does not depend on what the thread composed before, so a node and an auditor agree
    /// to the last bit. With one planner shared by the thread, rustfft built the lengths of this account on the
    /// sub-transforms cached by the earlier one, and ε moved by 1.3e-11 (found by a search over such pairs).
    #[test]
    fn epsilon_is_independent_of_the_threads_history() {
        let account = || {
            let event = SampledGaussian { q: 0.12, sigma: 0.91, steps: 26 };
            let mut account = crate::accountant::PrivacyAccount::new();
            account.add_pure(0.1).unwrap().add_sampled_gaussian(&event).unwrap().add_sampled_gaussian(&event).unwrap();
            account.epsilon(1e-5).unwrap().to_bits()
        };
        let fresh = std::thread::spawn(account).join().unwrap();
        let after_another = std::thread::spawn(move || {
            eps(0.059, 0.75, 24, 1e-5);
            account()
        })
        .join()
        .unwrap();
        assert_eq!(f64::from_bits(fresh), f64::from_bits(after_another));
        assert_eq!(fresh, account());
    }

    #[test]
    fn truncation_constant() {
        assert!((norm_cdf(-X_TRUNCATION) / (0.5 * (-50f64).exp()) - 1.0).abs() < 1e-9);
    }

    /// max(0.01, 1% of ε): the accuracy asked of the PLD accountant against dp-accounting.
    fn required(reference: f64) -> f64 {
        0.01f64.max(0.01 * reference)
    }

    /// The exact ε at δ of one step (both directions), by bisection on the closed-form δ(ε); rounded down.
    fn exact_one_step(q: f64, sigma: f64, delta: f64) -> f64 {
        let d = |e: f64| {
            sampled_gaussian_delta(q, sigma, Adjacency::Remove, e).max(sampled_gaussian_delta(
                q,
                sigma,
                Adjacency::Add,
                e,
            ))
        };
        let (mut lo, mut hi) = (0.0, 200.0);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if d(mid) > delta { lo = mid } else { hi = mid }
        }
        lo
    }

    /// The exact ε at δ of `steps` Gaussian mechanisms with noise σ (q = 1): one Gaussian with σ/√steps
    /// (Balle and Wang 2018, Theorem 8); rounded down.
    fn exact_gaussian(sigma: f64, steps: u64, delta: f64) -> f64 {
        exact_one_step(1.0, sigma / (steps as f64).sqrt(), delta)
    }

    #[test]
    fn matches_the_reference_table() {
        // shared/design/privacy.md; full digits from benches/peers/dp_accounting_reference.py, dp-accounting 0.6.0
        // PLDAccountant(value_discretization_interval=1e-4), δ = 1e-5.
        for (q, s, t, reference) in [
            (256.0 / 60000.0, 1.1, 14063, 2.381779),
            (0.01, 1.0, 1000, 1.828244),
            (0.001, 0.8, 10000, 0.782525),
            (1.0, 5.0, 10, 2.594383),
        ] {
            let t0 = std::time::Instant::now();
            let e = eps(q, s, t, 1e-5);
            println!("PLD q={q:.6} σ={s} T={t}: ε = {e:.6} (dp-accounting {reference}) in {:?}", t0.elapsed());
            assert!((e - reference).abs() <= required(reference), "q={q} σ={s} T={t}: {e} vs {reference}");
            // In fact the same computation: agreement to the printed digits.
            assert!((e - reference).abs() < 1e-5, "q={q} σ={s} T={t}: {e} vs {reference}");
        }
        // q = 1: the exact value (Balle and Wang 2018) is 2.594383; never below it.
        let exact = exact_gaussian(5.0, 10, 1e-5);
        assert!((exact - 2.594383).abs() < 1e-6 && eps(1.0, 5.0, 10, 1e-5) >= exact);
    }

    #[test]
    fn matches_dp_accounting_on_other_settings() {
        // benches/peers/dp_accounting_reference.py, dp-accounting 0.6.0, PLDAccountant(1e-4), δ = 1e-5:
        // (q, σ, steps, ε).
        let cases = [
            (0.005, 0.6, 1, 0.859579),
            (0.005, 0.6, 50, 2.306791),
            (0.005, 0.6, 3000, 6.216251),
            (0.005, 1.5, 1, 0.023696),
            (0.005, 1.5, 50, 0.099466),
            (0.005, 1.5, 3000, 0.767229),
            (0.005, 3.0, 1, 0.005590),
            (0.005, 3.0, 50, 0.036435),
            (0.005, 3.0, 3000, 0.321792),
            (0.02, 0.6, 1, 2.497796),
            (0.02, 0.6, 50, 4.883770),
            (0.02, 0.6, 3000, 25.030699),
            (0.02, 1.5, 1, 0.127928),
            (0.02, 1.5, 50, 0.455928),
            (0.02, 1.5, 3000, 3.575418),
            (0.02, 3.0, 1, 0.029242),
            (0.02, 3.0, 50, 0.168415),
            (0.02, 3.0, 3000, 1.466894),
            (0.1, 0.6, 1, 4.770388),
            (0.1, 0.6, 50, 15.011534),
            (0.1, 0.6, 3000, 174.338719),
            (0.1, 1.5, 1, 0.675287),
            (0.1, 1.5, 50, 2.530192),
            (0.1, 1.5, 3000, 25.115518),
            (0.1, 3.0, 1, 0.175327),
            (0.1, 3.0, 50, 0.970821),
            (0.1, 3.0, 3000, 9.316527),
            (0.5, 0.6, 1, 7.040775),
            (0.5, 0.6, 50, 60.634972),
            (0.5, 0.6, 3000, 1583.359400),
            (0.5, 1.5, 1, 2.017520),
            (0.5, 1.5, 50, 14.066223),
            (0.5, 1.5, 3000, 259.428592),
            (0.5, 3.0, 1, 0.780582),
            (0.5, 3.0, 50, 5.626423),
            (0.5, 3.0, 3000, 81.384267),
        ];
        let mut worst: f64 = 0.0;
        for (q, s, t, reference) in cases {
            let t0 = std::time::Instant::now();
            let e = eps(q, s, t, 1e-5);
            let rdp = super::super::epsilon_with(
                super::super::AccountantKind::Rdp,
                &[SampledGaussian { q, sigma: s, steps: t }],
                1e-5,
            )
            .unwrap();
            println!(
                "PLD q={q} σ={s} T={t}: ε = {e:.6} (dp-accounting {reference}, RDP {rdp:.6}) in {:?}",
                t0.elapsed()
            );
            assert!((e - reference).abs() <= required(reference), "q={q} σ={s} T={t}: {e} vs {reference}");
            worst = worst.max((e - reference).abs() / reference.max(1.0));
            // Sanity: RDP is an upper bound too, and PLD is the tighter one here.
            assert!(e <= rdp, "q={q} σ={s} T={t}: PLD {e} > RDP {rdp}");
            if t == 1 {
                // One step: the exact ε is known in closed form; a pessimistic PLD is never below it.
                let exact = exact_one_step(q, s, 1e-5);
                assert!(e >= exact && e - exact < 1e-3, "q={q} σ={s}: {e} vs exact {exact}");
            }
        }
        println!("largest difference to dp-accounting: {worst:.2e} (relative to max(1, ε))");
    }

    #[test]
    fn never_below_the_exact_gaussian() {
        // q = 1: T Gaussian mechanisms are one Gaussian with σ/√T, exact by Balle and Wang 2018. The references
        // are dp-accounting 0.6.0 PLD (which equals the exact value to 6 digits here).
        for (s, t, reference) in [(1.0, 1, 4.377178), (2.0, 4, 4.377178), (0.8, 100, 130.576706), (5.0, 10, 2.594383)] {
            for delta in [1e-3, 1e-5, 1e-9] {
                let (e, exact) = (eps(1.0, s, t, delta), exact_gaussian(s, t, delta));
                assert!(e >= exact && e - exact < 1e-3 * exact.max(1.0), "σ={s} T={t} δ={delta}: {e} vs exact {exact}");
            }
            let e = eps(1.0, s, t, 1e-5);
            assert!((e - reference).abs() < 1e-5 * reference.max(1.0), "σ={s} T={t}: {e} vs {reference}");
        }
    }

    #[test]
    fn other_deltas_and_delta_for_epsilon() {
        // benches/peers/dp_accounting_reference.py, dp-accounting 0.6.0.
        for (q, s, t, delta, reference) in
            [(0.01, 1.0, 1000, 1e-3, 1.162518), (0.01, 1.0, 1000, 1e-8, 2.697875), (0.02, 0.8, 500, 1e-6, 5.440308)]
        {
            let e = eps(q, s, t, delta);
            assert!((e - reference).abs() < 1e-5 * reference.max(1.0), "{q} {s} {t} {delta}: {e} vs {reference}");
        }
        for (q, s, t, e, reference) in [
            (0.01, 1.0, 1000, 1.0, 2.612496806e-03),
            (0.01, 1.0, 1000, 2.0, 2.665721979e-06),
            (1.0, 5.0, 10, 1.0, 2.442102837e-02),
        ] {
            let mut acc = PldAccountant::new();
            acc.compose(SampleRate::new(q).unwrap(), NoiseMultiplier::new(s).unwrap(), t);
            let d = acc.delta(Epsilon::new(e).unwrap());
            assert!((d / reference - 1.0).abs() < 1e-5, "{q} {s} {t} ε={e}: δ = {d:e} vs {reference:e}");
            // And back.
            let back = acc.epsilon(Delta::new(d).unwrap()).get();
            assert!((back - e).abs() < 1e-6, "{back} vs {e}");
        }
    }

    #[test]
    fn finer_grids_are_tighter_and_all_are_upper_bounds() {
        // Pessimistic at every Δ, and the estimate falls towards the exact value as Δ shrinks.
        let (q, s, t) = (SampleRate::new(0.05).unwrap(), NoiseMultiplier::new(1.2).unwrap(), 200);
        let at = |d: f64| {
            let mut acc = PldAccountant::with_discretization(d).unwrap();
            acc.compose(q, s, t);
            acc.epsilon(Delta::new(1e-5).unwrap()).get()
        };
        let (coarse, mid, fine) = (at(1e-2), at(1e-3), at(1e-4));
        println!("Δ = 1e-2, 1e-3, 1e-4: {coarse:.6} {mid:.6} {fine:.6}");
        assert!(coarse >= mid && mid >= fine, "{coarse} {mid} {fine}");
        assert!(matches!(PldAccountant::with_discretization(0.0), Err(AccountantError::Discretization(_))));
        assert!(matches!(PldAccountant::with_discretization(f64::NAN), Err(AccountantError::Discretization(_))));
    }

    #[test]
    fn one_step_pmfs_are_distributions() {
        for (q, s) in [(0.01, 1.0), (0.3, 0.7), (1.0, 2.0), (0.9, 10.0), (1e-4, 1e3)] {
            let pld = PrivacyLossDistribution::sampled_gaussian(q, s, DEFAULT_DISCRETIZATION);
            for pmf in [pld.remove(), pld.add()] {
                let total: f64 = pmf.probs().iter().sum::<f64>() + pmf.infinity_mass();
                // Negative second differences from rounding are clamped to 0, which can only add mass (≤ 1e-6),
                // and only raise δ.
                assert!((1.0 - 1e-12..1.0 + 1e-6).contains(&total), "q={q} σ={s}: total mass {total}");
                assert!(pmf.probs().iter().all(|&p| p >= 0.0) && pmf.infinity_mass() < 1e-20);
            }
            // The discrete δ-curve dominates the exact one (connect the dots on a convex curve).
            for e in [0.0, 0.01, 0.1, 0.5, 1.0, 2.0] {
                for (adj, pmf) in [(Adjacency::Remove, pld.remove()), (Adjacency::Add, pld.add())] {
                    let exact = sampled_gaussian_delta(q, s, adj, e);
                    assert!(pmf.delta_for_epsilon(e) >= exact - 1e-15, "q={q} σ={s} ε={e} {adj:?}");
                }
            }
        }
    }

    #[test]
    fn composition_of_different_events() {
        let d = Delta::new(1e-5).unwrap();
        let (q1, s1) = (SampleRate::new(0.01).unwrap(), NoiseMultiplier::new(1.0).unwrap());
        let (q2, s2) = (SampleRate::new(0.2).unwrap(), NoiseMultiplier::new(3.0).unwrap());
        let mut split = PldAccountant::new();
        split.compose(q1, s1, 300).compose(q2, s2, 20).compose(q1, s1, 700);
        let mut whole = PldAccountant::new();
        whole.compose(q2, s2, 20).compose(q1, s1, 1000);
        assert_eq!(split, whole);
        let both = whole.epsilon(d).get();
        let one = eps(0.01, 1.0, 1000, 1e-5);
        let two = eps(0.2, 3.0, 20, 1e-5);
        // More than either alone, less than basic composition with δ split in halves.
        assert!(both > one && both > two);
        assert!(both <= eps(0.01, 1.0, 1000, 5e-6) + eps(0.2, 3.0, 20, 5e-6));
        assert!(whole.delta(Epsilon::new(both).unwrap()) <= 1e-5 * (1.0 + 1e-9));
    }

    #[test]
    fn degenerate_cases() {
        assert_eq!(eps(0.0, 1.0, 100, 1e-5), 0.0);
        assert_eq!(eps(0.0, 0.0, 100, 1e-5), 0.0);
        assert_eq!(eps(0.5, 1.0, 0, 1e-5), 0.0);
        assert_eq!(eps(0.01, 0.0, 1, 1e-5), f64::INFINITY);
        let mut none = PldAccountant::new();
        none.compose(SampleRate::new(0.1).unwrap(), NoiseMultiplier::new(0.0).unwrap(), 3);
        assert_eq!(none.delta(Epsilon::new(10.0).unwrap()), 1.0);
        assert_eq!(PldAccountant::new().delta(Epsilon::ZERO), 0.0);
        let mut inf = PldAccountant::new();
        inf.compose_pure(Epsilon::INFINITY);
        assert_eq!(inf.epsilon(Delta::new(0.5).unwrap()), Epsilon::INFINITY);
        // Absurd step counts end (as no guarantee, or a coarse finite bound), they do not hang.
        let t0 = std::time::Instant::now();
        let e = eps(0.01, 1.0, 1_000_000_000_000, 1e-5);
        assert!(e >= 1e3 && t0.elapsed().as_secs() < 60, "{e}");
        // Huge noise: next to nothing.
        assert!(eps(0.01, 1e4, 1, 1e-5) < 1e-3);
        // Tiny noise and many steps: the grid is coarsened to fit, the bound stays finite and above the exact
        // one-step value.
        let e = eps(0.5, 0.1, 200, 1e-5);
        assert!(e.is_finite() && e >= exact_one_step(0.5, 0.1, 1e-5), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]
        #[test]
        fn monotone_and_above_exact(q in 0.001f64..1.0, s in 0.5f64..5.0, steps in 1u64..500) {
            let base = eps(q, s, steps, 1e-5);
            proptest::prop_assert!(base.is_finite() && base >= 0.0);
            proptest::prop_assert!(base >= exact_one_step(q, s, 1e-5) - 1e-12);
            proptest::prop_assert!(eps(q, s * 1.1, steps, 1e-5) <= base + 1e-9);
            proptest::prop_assert!(eps(q, s, steps + 50, 1e-5) >= base - 1e-9);
        }
    }
}

//! Noise calibration: the smallest noise multiplier σ for which `steps` steps of the Poisson-subsampled
//! Gaussian mechanism at rate q spend at most a target ε at δ.
//!
//! ε is non-increasing in σ (each order's RDP is), so bisection applies. The search keeps an interval
//! `[lo, hi]` with `ε(hi) ≤ target < ε(lo)` and returns `hi`: the answer always meets the target, and is
//! larger than the exact smallest σ by at most the tolerance (errs on the safe side).

use super::{AccountantError, AccountantKind, Delta, Epsilon, NoiseMultiplier, SampleRate, epsilon_for};

/// Largest noise multiplier the search tries before declaring a target unreachable.
pub const SIGMA_LIMIT: f64 = 1e4;
/// Width of the final bracket relative to its upper end (so the returned σ exceeds the smallest one by at most
/// this fraction; 1e-6 of σ ≈ 1 is well inside the 1e-4 asked for).
pub const RELATIVE_TOLERANCE: f64 = 1e-6;

/// The smallest σ (to [`RELATIVE_TOLERANCE`], rounded up) with ε(q, σ, steps, δ) ≤ `target` by accountant
/// `kind`.
///
/// # Errors
/// [`AccountantError::Epsilon`] if `target` is not finite and > 0; [`AccountantError::Unreachable`] if even
/// σ = [`SIGMA_LIMIT`] does not reach the target; [`AccountantError::Unsupported`] for an accountant not in
/// this build.
///
/// # Example
/// ```
/// use cohort_dp::accountant::*;
/// let (q, d) = (SampleRate::new(0.01)?, Delta::new(1e-5)?);
/// let sigma = calibrate_noise(Epsilon::new(3.0)?, d, q, 1000, AccountantKind::Rdp)?;
/// assert!((sigma.get() - 0.8646).abs() < 1e-3); // dp-accounting 0.6.0
/// assert!(epsilon_for(q, sigma, 1000, d, AccountantKind::Rdp)?.get() <= 3.0);
/// # Ok::<(), AccountantError>(())
/// ```
pub fn calibrate_noise(
    target: Epsilon,
    delta: Delta,
    q: SampleRate,
    steps: u64,
    kind: AccountantKind,
) -> Result<NoiseMultiplier, AccountantError> {
    let t = target.get();
    if !(t > 0.0 && t.is_finite()) {
        return Err(AccountantError::Epsilon(t));
    }
    let eps = |sigma: f64| -> Result<f64, AccountantError> {
        Ok(epsilon_for(q, NoiseMultiplier::new(sigma)?, steps, delta, kind)?.get())
    };
    let unreachable = || AccountantError::Unreachable { target: t, delta: delta.get(), q: q.get(), steps, limit: SIGMA_LIMIT };
    // Bracket: grow hi until it meets the target; lo is the last σ known to miss it (0 always misses, unless
    // nothing is spent at all, in which case the smallest σ is 0).
    if eps(0.0)? <= t {
        return NoiseMultiplier::new(0.0);
    }
    let (mut lo, mut hi) = (0.0, 1.0);
    while eps(hi)? > t {
        lo = hi;
        hi *= 2.0;
        if hi > SIGMA_LIMIT {
            return if eps(SIGMA_LIMIT)? <= t { bisect(lo, SIGMA_LIMIT, t, eps) } else { Err(unreachable()) };
        }
    }
    bisect(lo, hi, t, eps)
}

fn bisect(
    mut lo: f64,
    mut hi: f64,
    target: f64,
    eps: impl Fn(f64) -> Result<f64, AccountantError>,
) -> Result<NoiseMultiplier, AccountantError> {
    while hi - lo > RELATIVE_TOLERANCE * hi {
        let mid = 0.5 * (lo + hi);
        if eps(mid)? > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    NoiseMultiplier::new(hi)
}

/// [`calibrate_noise`] with the RDP accountant, from raw numbers: the smallest σ with
/// ε(q, σ, steps, `delta`) ≤ `target`.
///
/// # Errors
/// As [`calibrate_noise`], plus the validation errors of `delta` and `q`.
///
/// # Example
/// ```
/// let sigma = cohort_dp::accountant::calibrate(1.0, 1e-5, 0.01, 1000).unwrap();
/// assert!((sigma - 1.5131).abs() < 1e-3); // dp-accounting 0.6.0
/// ```
pub fn calibrate(target: f64, delta: f64, q: f64, steps: u64) -> Result<f64, AccountantError> {
    let target = Epsilon::new(target)?;
    let sigma = calibrate_noise(target, Delta::new(delta)?, SampleRate::new(q)?, steps, AccountantKind::Rdp)?;
    Ok(sigma.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_matches_reference_and_is_safe() {
        let (q, d) = (SampleRate::new(0.01).unwrap(), Delta::new(1e-5).unwrap());
        for (target, expected) in [(1.0, 1.5131), (3.0, 0.8646), (8.0, 0.6159)] {
            let sigma = calibrate_noise(Epsilon::new(target).unwrap(), d, q, 1000, AccountantKind::Rdp).unwrap();
            let achieved = epsilon_for(q, sigma, 1000, d, AccountantKind::Rdp).unwrap().get();
            println!("calibrate ε={target}: σ = {:.6} (dp-accounting {expected}), achieved ε = {achieved:.6}", sigma.get());
            assert!((sigma.get() - expected).abs() < 1e-3, "ε={target}: σ={sigma} vs {expected}");
            assert!(achieved <= target);
            // Minimal to the tolerance: a slightly smaller σ misses the target.
            let below = NoiseMultiplier::new(sigma.get() * (1.0 - 2.0 * RELATIVE_TOLERANCE)).unwrap();
            assert!(epsilon_for(q, below, 1000, d, AccountantKind::Rdp).unwrap().get() > target);
        }
    }

    #[test]
    fn plain_calibrate_agrees() {
        assert!((calibrate(1.0, 1e-5, 0.01, 1000).unwrap() - 1.5131).abs() < 1e-3);
    }

    #[test]
    fn bad_targets_and_unreachable() {
        assert!(matches!(calibrate(0.0, 1e-5, 0.01, 1000), Err(AccountantError::Epsilon(_))));
        assert!(matches!(calibrate(f64::INFINITY, 1e-5, 0.01, 1000), Err(AccountantError::Epsilon(_))));
        assert!(matches!(calibrate(f64::NAN, 1e-5, 0.01, 1000), Err(AccountantError::Epsilon(_))));
        assert!(matches!(calibrate(1.0, 0.0, 0.01, 1000), Err(AccountantError::Delta(_))));
        assert!(matches!(calibrate(1.0, 1e-5, 2.0, 1000), Err(AccountantError::SampleRate(_))));
        let err = calibrate(1e-9, 1e-5, 1.0, 1000).unwrap_err();
        assert!(matches!(err, AccountantError::Unreachable { .. }));
        assert!(err.to_string().contains("no noise multiplier"));
        // Nothing spent: σ = 0 suffices.
        assert_eq!(calibrate(1.0, 1e-5, 0.0, 1000).unwrap(), 0.0);
        assert_eq!(calibrate(1.0, 1e-5, 0.5, 0).unwrap(), 0.0);
        assert!(matches!(
            calibrate_noise(Epsilon::new(1.0).unwrap(), Delta::new(1e-5).unwrap(), SampleRate::new(0.1).unwrap(), 10, AccountantKind::Pld),
            Err(AccountantError::Unsupported(_))
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]
        #[test]
        fn calibrated_sigma_always_meets_target(q in 0.001f64..1.0, steps in 1u64..3000, target in 0.2f64..20.0) {
            let sigma = calibrate(target, 1e-5, q, steps).unwrap();
            let achieved = super::super::epsilon(&[super::super::SampledGaussian { q, sigma, steps }], 1e-5).unwrap();
            proptest::prop_assert!(achieved <= target, "σ={} gives ε={} > {}", sigma, achieved, target);
        }
    }
}

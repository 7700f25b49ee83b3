//! The DP evaluation of a regression task as clipped sums: what one held-out row contributes, and the metrics
//! derived from the released (noisy) sums.
//!
//! Targets and predictions are mapped onto [-1, 1] by the schema's declared `label_bounds` (clamped there), the
//! error `e = prediction − target` is clipped to [-1, 1], and each row contributes, on a fixed-point grid of
//! [`GRID`] steps per unit, the vector `(1, e², |e|, y, y²)`. Every entry is at most one unit, so the L1
//! sensitivity of the sums is five units, and a clipped-sums release (`cohort_dp::releases::clipped_sums` with
//! [`CAPS`]) is ε-DP under add/remove. MSE, MAE and R² are post-processing of the five sums, so they spend
//! nothing more, and sums from several nodes add up to the pooled figures.
//!
//! Clipping at the half range biases only predictions that are off by more than half the declared range; a
//! diverged model (NaN predictions) counts as maximal error instead of failing the release.

use super::{EvalMetrics, MetricsError, names};
use std::collections::BTreeMap;

/// Fixed-point steps per unit of the scaled values.
pub const GRID: i64 = 1 << 16;

/// Entries of one row's contribution: count, Σe², Σ|e|, Σy, Σy² (scaled units).
pub const WIDTH: usize = 5;

/// The per-entry caps of a contribution, in grid steps: one unit each.
pub const CAPS: [i64; WIDTH] = [GRID; WIDTH];

/// `(center, half-width)` of the declared range.
fn scaling([lower, upper]: [f64; 2]) -> (f64, f64) {
    ((lower + upper) / 2.0, (upper - lower) / 2.0)
}

/// `v` on the grid, for `v` in [-1, 1].
fn on_grid(v: f64) -> i64 {
    (v * GRID as f64).round() as i64
}

/// What one held-out row with `target` and model output `prediction` contributes, against the declared range
/// `label_bounds` (see the [module docs](self)). A non-finite prediction counts as the largest error.
///
/// # Example
/// ```
/// use cohort_core::metrics::regression_sums::{contribution, GRID};
/// // Range [0, 200]: a target of 150 is 0.5 scaled; a prediction of 100 is 0; the error is -0.5.
/// assert_eq!(contribution(100.0, 150.0, [0.0, 200.0]), [GRID, GRID / 4, GRID / 2, GRID / 2, GRID / 4]);
/// ```
pub fn contribution(prediction: f32, target: f32, label_bounds: [f64; 2]) -> [i64; WIDTH] {
    let (center, half) = scaling(label_bounds);
    let y = ((f64::from(target) - center) / half).clamp(-1.0, 1.0);
    let p = (f64::from(prediction) - center) / half;
    let e = if p.is_finite() { (p.clamp(-1.0, 1.0) - y).clamp(-1.0, 1.0) } else { 1.0 };
    let y = if y.is_nan() { 0.0 } else { y };
    [GRID, on_grid(e * e), on_grid(e.abs()), on_grid(y), on_grid(y * y)]
}

/// MSE (also as `loss`), MAE and R² from released sums (one node's, or several nodes' added up), in the
/// target's own units. The noisy count is clamped to be positive and the sums of squares to be non-negative
/// (post-processing); fewer than one noisy row gives no metrics, and no spread of the targets gives no R².
///
/// # Errors
/// [`MetricsError::Shape`] when `sums` is not [`WIDTH`] long.
///
/// # Example
/// ```
/// use cohort_core::metrics::regression_sums::{contribution, metrics};
/// let rows = [(10.0, 12.0), (20.0, 18.0), (30.0, 30.0)];
/// let mut sums = [0i64; 5];
/// for (p, t) in rows {
///     for (s, c) in sums.iter_mut().zip(contribution(p, t, [0.0, 40.0])) {
///         *s += c;
///     }
/// }
/// let m = metrics(&sums, [0.0, 40.0]).unwrap();
/// assert!((m.get("mse").unwrap() - 8.0 / 3.0).abs() < 1e-2);
/// assert!((m.get("r2").unwrap() - (1.0 - 8.0 / 168.0)).abs() < 1e-3);
/// ```
pub fn metrics(sums: &[i64], label_bounds: [f64; 2]) -> Result<EvalMetrics, MetricsError> {
    let &[count, squared, absolute, targets, target_squares] = sums else {
        return Err(MetricsError::Shape(format!("{} regression sums where {WIDTH} were expected", sums.len())));
    };
    let unit = |v: i64| v as f64 / GRID as f64;
    let n = unit(count);
    if n < 1.0 {
        return Ok(EvalMetrics { examples: 0, values: BTreeMap::new() });
    }
    let (_, half) = scaling(label_bounds);
    let squared = unit(squared).max(0.0);
    let mse = squared / n * half * half;
    let mae = unit(absolute).max(0.0) / n * half;
    let spread = unit(target_squares).max(0.0) - unit(targets).powi(2) / n;
    let mut values = BTreeMap::new();
    values.insert(names::MSE.into(), mse);
    values.insert(names::LOSS.into(), mse);
    values.insert(names::MAE.into(), mae);
    if spread > 0.0 {
        values.insert(names::R2.into(), 1.0 - squared / spread);
    }
    values.retain(|_, v: &mut f64| v.is_finite());
    Ok(EvalMetrics { examples: n.round() as u64, values })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Exact sums reproduce the exact metrics of [`super::super::regression`] when nothing is clipped, up to the
    /// grid's rounding.
    #[test]
    fn exact_sums_give_the_exact_metrics() {
        let targets: Vec<f32> = (0..200).map(|i| 50.0 + (i as f32 * 7.3) % 200.0).collect();
        let predictions: Vec<f32> = targets.iter().enumerate().map(|(i, t)| t + ((i % 9) as f32 - 4.0) * 6.0).collect();
        let bounds = [0.0, 320.0];
        let mut sums = [0i64; WIDTH];
        for (p, t) in predictions.iter().zip(&targets) {
            for (s, c) in sums.iter_mut().zip(contribution(*p, *t, bounds)) {
                *s += c;
            }
        }
        let derived = metrics(&sums, bounds).unwrap();
        let exact = super::super::regression(&predictions, &targets).unwrap();
        assert_eq!(derived.examples, 200);
        for name in ["mse", "mae", "r2"] {
            let (d, e) = (derived.get(name).unwrap(), exact.get(name).unwrap());
            assert!((d - e).abs() <= 1e-3 * e.abs().max(1.0), "{name}: {d} against {e}");
        }
    }

    #[test]
    fn a_diverged_prediction_counts_as_the_largest_error() {
        assert_eq!(contribution(f32::NAN, 0.0, [-1.0, 1.0])[1], GRID);
        assert_eq!(contribution(f32::INFINITY, 0.0, [-1.0, 1.0])[2], GRID);
        assert!(metrics(&[0; 4], [0.0, 1.0]).is_err());
        assert_eq!(metrics(&[GRID / 2, 0, 0, 0, 0], [0.0, 1.0]).unwrap().examples, 0);
    }

    proptest! {
        /// Every entry of every contribution is within its cap, whatever the values: the sensitivity the release
        /// is calibrated to holds.
        #[test]
        fn contributions_stay_within_their_caps(p in any::<f32>(), t in any::<f32>(), lo in -1e6f64..1e6, w in 1e-3f64..1e6) {
            let c = contribution(p, t, [lo, lo + w]);
            for (v, cap) in c.iter().zip(CAPS) {
                prop_assert!(v.abs() <= cap, "{c:?}");
            }
        }

        /// Noisy sums never give non-finite or impossible metrics.
        #[test]
        fn any_sums_give_finite_metrics(sums in proptest::collection::vec(any::<i32>(), WIDTH)) {
            let sums: Vec<i64> = sums.into_iter().map(i64::from).collect();
            let m = metrics(&sums, [0.0, 10.0]).unwrap();
            prop_assert!(m.values.values().all(|v| v.is_finite()));
            prop_assert!(m.get("mse").is_none_or(|v| v >= 0.0));
            prop_assert!(m.get("r2").is_none_or(|v| v <= 1.0));
        }
    }
}

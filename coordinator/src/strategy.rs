//! Aggregation strategies. A strategy never touches the network: it turns the example-weighted sum of client
//! deltas into the next global model.
//!
//! Clients upload `delta_i = w_i - w_global` with weight `n_i`. The coordinator only ever needs
//! `Σ n_i · delta_i` and `Σ n_i`, which is exactly what secure aggregation reveals, so every strategy here also runs
//! under secure aggregation. The robust strategies ([`Median`], [`TrimmedMean`]) need each client's update:
//! they report [`Strategy::needs_individual_updates`], get the round's deltas through
//! [`Strategy::aggregate_individual`], and are refused when secure aggregation is on.

use cohort_core::config::StrategyConfig;

/// The example-weighted sum of client deltas for one round, accumulated as updates stream in.
///
/// Memory is O(model): individual updates are added and dropped. The sum is kept in fixed point
/// ([`FRACTION_BITS`] fractional bits in an `i128` per coordinate), so integer addition makes it exact and
/// independent of the order in which updates arrive: a federation replayed with the same seeds gives a
/// bit-identical model however its uploads raced.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedSum {
    sum: Vec<i128>,
    weight: i128,
    contributors: usize,
}

/// Fractional bits of [`WeightedSum`]'s fixed point: a resolution of 2⁻⁴⁸ ≈ 3.6e-15, finer than an `f32` of
/// 1e-7 resolves itself.
pub const FRACTION_BITS: i32 = 48;

/// The largest magnitude of one weighted term `weight · delta` (2⁵⁶ ≈ 7.2e16: a delta of 7e7 at the largest
/// configurable weight). An `i128` then holds the sum of 2²³ such terms.
pub const MAX_TERM: f64 = (1u64 << 56) as f64;

/// An update that cannot be added.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AggregateError {
    /// The update's length differs from the model's.
    #[error("update has {actual} values but the model has {expected}")]
    WrongShape {
        /// Model length.
        expected: usize,
        /// Update length.
        actual: usize,
    },
    /// A zero, negative or non-finite weight.
    #[error("invalid example weight {0}")]
    BadWeight(f64),
    /// A non-finite value in the update.
    #[error("update value {index} is not finite")]
    NonFinite {
        /// Index of the first bad value.
        index: usize,
    },
    /// A weighted value beyond [`MAX_TERM`], or a sum that no longer fits.
    #[error("weighted update value {index} is out of range (|weight · value| must stay below {MAX_TERM:e})")]
    OutOfRange {
        /// Index of the first bad value.
        index: usize,
    },
    /// Nothing to aggregate.
    #[error("no updates to aggregate")]
    Empty,
}

/// `x` in [`WeightedSum`]'s fixed point, or None beyond [`MAX_TERM`]. Scaling by a power of two is exact, so
/// the only rounding is the one to the 2⁻⁴⁸ grid, the same for a value wherever it comes from.
fn to_fixed(x: f64) -> Option<i128> {
    /// Below this the scaled value fits an `i64`, whose conversion is one instruction (an `i128` one is a
    /// library call): nearly every weighted delta.
    const I64_SAFE: f64 = 9.0e18;
    if x.abs() >= MAX_TERM {
        return None;
    }
    let scaled = (x * f64::from(FRACTION_BITS).exp2()).round();
    Some(if scaled.abs() < I64_SAFE { i128::from(scaled as i64) } else { scaled as i128 })
}

fn from_fixed(x: i128) -> f64 {
    x as f64 / f64::from(FRACTION_BITS).exp2()
}

impl WeightedSum {
    /// An empty sum for a model of `len` parameters.
    pub fn new(len: usize) -> Self {
        Self { sum: vec![0; len], weight: 0, contributors: 0 }
    }

    /// Builds a sum that was computed elsewhere (for example decrypted from secure aggregation).
    ///
    /// # Errors
    /// [`AggregateError::BadWeight`] for a non-positive total weight, [`AggregateError::OutOfRange`] for a value
    /// the fixed point cannot hold.
    pub fn from_parts(sum: Vec<f64>, weight: f64, contributors: usize) -> Result<Self, AggregateError> {
        if !(weight > 0.0 && weight.is_finite()) {
            return Err(AggregateError::BadWeight(weight));
        }
        let weight = to_fixed(weight).ok_or(AggregateError::BadWeight(weight))?;
        let sum = sum
            .iter()
            .enumerate()
            .map(|(index, &s)| to_fixed(s).ok_or(AggregateError::OutOfRange { index }))
            .collect::<Result<_, _>>()?;
        Ok(Self { sum, weight, contributors })
    }

    /// Checks that `delta` fits the sum: the model's shape, every value finite.
    ///
    /// # Errors
    /// [`AggregateError::WrongShape`] or [`AggregateError::NonFinite`].
    pub fn check(&self, delta: &[f32]) -> Result<(), AggregateError> {
        if delta.len() != self.sum.len() {
            return Err(AggregateError::WrongShape { expected: self.sum.len(), actual: delta.len() });
        }
        match delta.iter().position(|v| !v.is_finite()) {
            Some(index) => Err(AggregateError::NonFinite { index }),
            None => Ok(()),
        }
    }

    /// Adds `weight · delta`.
    ///
    /// # Errors
    /// [`AggregateError`] for a wrong shape, a bad weight, a non-finite or out-of-range value; the sum is
    /// unchanged then.
    pub fn add(&mut self, delta: &[f32], weight: f64) -> Result<(), AggregateError> {
        self.check(delta)?;
        let bad_weight = AggregateError::BadWeight(weight);
        if !(weight > 0.0 && weight.is_finite()) {
            return Err(bad_weight);
        }
        let total = to_fixed(weight).and_then(|w| self.weight.checked_add(w)).ok_or(bad_weight)?;
        let term = |d: f32| to_fixed(weight * f64::from(d));
        // One pass; a refused update is taken out again exactly (integer sums), so it leaves no trace.
        let refused = self.sum.iter_mut().zip(delta).position(|(s, &d)| match term(d).and_then(|t| s.checked_add(t)) {
            Some(next) => {
                *s = next;
                false
            }
            None => true,
        });
        if let Some(index) = refused {
            for (s, &d) in self.sum.iter_mut().zip(delta).take(index) {
                *s -= term(d).unwrap_or(0);
            }
            return Err(AggregateError::OutOfRange { index });
        }
        self.weight = total;
        self.contributors += 1;
        Ok(())
    }

    /// Number of updates added.
    pub fn contributors(&self) -> usize {
        self.contributors
    }

    /// Total weight.
    pub fn weight(&self) -> f64 {
        from_fixed(self.weight)
    }

    /// The weighted mean delta.
    ///
    /// # Errors
    /// [`AggregateError::Empty`] when nothing was added.
    pub fn mean(&self) -> Result<Vec<f64>, AggregateError> {
        if self.contributors == 0 || self.weight <= 0 {
            return Err(AggregateError::Empty);
        }
        let weight = from_fixed(self.weight);
        Ok(self.sum.iter().map(|&s| from_fixed(s) / weight).collect())
    }
}

/// A federated aggregation strategy.
pub trait Strategy: Send + Sync {
    /// Stable name, recorded in the registry.
    fn name(&self) -> &'static str;

    /// Hyperparameters as JSON, recorded in the registry.
    fn hyperparameters(&self) -> serde_json::Value;

    /// Whether the strategy needs each client's update (so it cannot run under secure aggregation).
    fn needs_individual_updates(&self) -> bool {
        false
    }

    /// Computes the next global model from the current one and the round's weighted delta sum.
    ///
    /// # Errors
    /// [`AggregateError`] when the sum is empty or does not fit the model.
    fn aggregate(&mut self, global: &[f32], deltas: &WeightedSum) -> Result<Vec<f32>, AggregateError>;

    /// Computes the next global model from the current one and the round's individual deltas, for a strategy
    /// that [needs them](Strategy::needs_individual_updates). The default refuses: the others work from the sum.
    ///
    /// # Errors
    /// [`AggregateError`] when there are no deltas or one does not fit the model.
    fn aggregate_individual(&mut self, global: &[f32], deltas: &[Vec<f32>]) -> Result<Vec<f32>, AggregateError> {
        let _ = (global, deltas);
        Err(AggregateError::Empty)
    }

    /// The optimizer state to checkpoint, as JSON (empty for stateless strategies).
    fn state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Restores the optimizer state saved by [`Strategy::state`].
    fn restore(&mut self, _state: &serde_json::Value) {}
}

fn check_shape(global: &[f32], deltas: &WeightedSum) -> Result<Vec<f64>, AggregateError> {
    let mean = deltas.mean()?;
    if mean.len() != global.len() {
        return Err(AggregateError::WrongShape { expected: global.len(), actual: mean.len() });
    }
    Ok(mean)
}

/// FedAvg (McMahan et al. 2017): `w ← w + Σ n_i Δ_i / Σ n_i`.
#[derive(Debug, Clone, Default)]
pub struct FedAvg;

impl Strategy for FedAvg {
    fn name(&self) -> &'static str {
        "fedavg"
    }

    fn hyperparameters(&self) -> serde_json::Value {
        serde_json::json!({})
    }

    fn aggregate(&mut self, global: &[f32], deltas: &WeightedSum) -> Result<Vec<f32>, AggregateError> {
        let mean = check_shape(global, deltas)?;
        Ok(global.iter().zip(mean).map(|(w, d)| (f64::from(*w) + d) as f32).collect())
    }
}

/// FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks"): clients add the proximal term
/// `mu/2 · |w − w_global|²` to their loss; the server aggregates as FedAvg.
#[derive(Debug, Clone)]
pub struct FedProx {
    /// Proximal coefficient sent to clients.
    pub mu: f64,
}

impl Strategy for FedProx {
    fn name(&self) -> &'static str {
        "fedprox"
    }

    fn hyperparameters(&self) -> serde_json::Value {
        serde_json::json!({ "mu": self.mu })
    }

    fn aggregate(&mut self, global: &[f32], deltas: &WeightedSum) -> Result<Vec<f32>, AggregateError> {
        FedAvg.aggregate(global, deltas)
    }
}

/// FedAdam (Reddi et al. 2021, "Adaptive Federated Optimization"): the mean client delta is a pseudo-gradient
/// for Adam on the server: `m ← β1 m + (1−β1) Δ`, `v ← β2 v + (1−β2) Δ²`, `w ← w + η m / (√v + τ)`.
#[derive(Debug, Clone)]
pub struct FedAdam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    tau: f64,
    m: Vec<f64>,
    v: Vec<f64>,
}

impl FedAdam {
    /// A FedAdam optimizer with zero moments.
    pub fn new(lr: f64, beta1: f64, beta2: f64, tau: f64) -> Self {
        Self { lr, beta1, beta2, tau, m: Vec::new(), v: Vec::new() }
    }
}

impl Strategy for FedAdam {
    fn name(&self) -> &'static str {
        "fedadam"
    }

    fn hyperparameters(&self) -> serde_json::Value {
        serde_json::json!({ "lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "tau": self.tau })
    }

    fn aggregate(&mut self, global: &[f32], deltas: &WeightedSum) -> Result<Vec<f32>, AggregateError> {
        let mean = check_shape(global, deltas)?;
        if self.m.len() != global.len() {
            self.m = vec![0.0; global.len()];
            self.v = vec![0.0; global.len()];
        }
        let mut next = Vec::with_capacity(global.len());
        for (i, (w, d)) in global.iter().zip(mean).enumerate() {
            self.m[i] = self.beta1 * self.m[i] + (1.0 - self.beta1) * d;
            self.v[i] = self.beta2 * self.v[i] + (1.0 - self.beta2) * d * d;
            next.push((f64::from(*w) + self.lr * self.m[i] / (self.v[i].sqrt() + self.tau)) as f32);
        }
        Ok(next)
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "m": self.m, "v": self.v })
    }

    fn restore(&mut self, state: &serde_json::Value) {
        let read = |key: &str| -> Vec<f64> {
            state.get(key).and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default()
        };
        self.m = read("m");
        self.v = read("v");
    }
}

/// Coordinate-wise median (Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
/// Rates", ICML): `w ← w + median_i Δ_i` per coordinate, the mean of the two middle values for an even count.
/// While hostile clients are fewer than half, every coordinate stays within the honest clients' range, whatever
/// the hostile ones send or declare as their weight (weights are not used).
#[derive(Debug, Clone, Default)]
pub struct Median;

impl Strategy for Median {
    fn name(&self) -> &'static str {
        "median"
    }

    fn hyperparameters(&self) -> serde_json::Value {
        serde_json::json!({})
    }

    fn needs_individual_updates(&self) -> bool {
        true
    }

    fn aggregate(&mut self, _global: &[f32], _deltas: &WeightedSum) -> Result<Vec<f32>, AggregateError> {
        Err(AggregateError::Empty)
    }

    fn aggregate_individual(&mut self, global: &[f32], deltas: &[Vec<f32>]) -> Result<Vec<f32>, AggregateError> {
        coordinatewise(global, deltas, |sorted| {
            let n = sorted.len();
            if n % 2 == 1 {
                f64::from(sorted[n / 2])
            } else {
                (f64::from(sorted[n / 2 - 1]) + f64::from(sorted[n / 2])) / 2.0
            }
        })
    }
}

/// Coordinate-wise trimmed mean (Yin et al. 2018): per coordinate, drop the ⌊trim · n⌋ largest and smallest
/// deltas and average the rest. With β = ⌊trim · n⌋ ≥ the number of hostile clients, no hostile value is ever
/// averaged in beyond the honest range. Unweighted.
#[derive(Debug, Clone)]
pub struct TrimmedMean {
    /// Fraction dropped at each end, in [0, 0.5).
    pub trim: f64,
}

impl Strategy for TrimmedMean {
    fn name(&self) -> &'static str {
        "trimmed-mean"
    }

    fn hyperparameters(&self) -> serde_json::Value {
        serde_json::json!({ "trim": self.trim })
    }

    fn needs_individual_updates(&self) -> bool {
        true
    }

    fn aggregate(&mut self, _global: &[f32], _deltas: &WeightedSum) -> Result<Vec<f32>, AggregateError> {
        Err(AggregateError::Empty)
    }

    fn aggregate_individual(&mut self, global: &[f32], deltas: &[Vec<f32>]) -> Result<Vec<f32>, AggregateError> {
        // At least one value is kept, whatever `trim`: at most (n − 1)/2 are dropped at each end.
        let n = deltas.len();
        let drop = ((self.trim.max(0.0) * n as f64).floor() as usize).min(n.saturating_sub(1) / 2);
        coordinatewise(global, deltas, |sorted| {
            let kept = &sorted[drop..n - drop];
            kept.iter().map(|&v| f64::from(v)).sum::<f64>() / kept.len() as f64
        })
    }
}

/// `global + combine(sorted deltas)` coordinate by coordinate, after checking every delta's shape and values.
fn coordinatewise(
    global: &[f32],
    deltas: &[Vec<f32>],
    combine: impl Fn(&[f32]) -> f64,
) -> Result<Vec<f32>, AggregateError> {
    if deltas.is_empty() {
        return Err(AggregateError::Empty);
    }
    for delta in deltas {
        if delta.len() != global.len() {
            return Err(AggregateError::WrongShape { expected: global.len(), actual: delta.len() });
        }
        if let Some(index) = delta.iter().position(|v| !v.is_finite()) {
            return Err(AggregateError::NonFinite { index });
        }
    }
    let mut column = Vec::with_capacity(deltas.len());
    Ok(global
        .iter()
        .enumerate()
        .map(|(i, w)| {
            column.clear();
            column.extend(deltas.iter().map(|d| d[i]));
            column.sort_by(f32::total_cmp);
            (f64::from(*w) + combine(&column)) as f32
        })
        .collect())
}

/// Builds the strategy a config names.
pub fn from_config(config: &StrategyConfig) -> Box<dyn Strategy> {
    match *config {
        StrategyConfig::Fedavg => Box::new(FedAvg),
        StrategyConfig::Fedprox { mu } => Box::new(FedProx { mu }),
        StrategyConfig::Fedadam { lr, beta1, beta2, tau } => Box::new(FedAdam::new(lr, beta1, beta2, tau)),
        StrategyConfig::Median => Box::new(Median),
        StrategyConfig::TrimmedMean { trim } => Box::new(TrimmedMean { trim }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert, proptest};

    /// One hostile delta among five moves the median and the trimmed mean no further than the honest range;
    /// FedAvg follows it.
    #[test]
    fn robust_strategies_ignore_one_hostile_update() {
        let honest = [[0.9f32, -1.0], [1.0, -1.1], [1.1, -0.9], [1.05, -1.0]];
        let mut deltas: Vec<Vec<f32>> = honest.iter().map(|d| d.to_vec()).collect();
        deltas.push(vec![-1000.0, 1e6]);
        let median = Median.aggregate_individual(&[0.0, 0.0], &deltas).unwrap();
        assert_eq!(median, vec![1.0, -1.0]);
        let trimmed = TrimmedMean { trim: 0.2 }.aggregate_individual(&[0.0, 0.0], &deltas).unwrap();
        for (v, range) in trimmed.iter().zip([0.9..=1.1, -1.1..=-0.9]) {
            assert!(range.contains(v), "{trimmed:?}");
        }
        let mut sum = WeightedSum::new(2);
        for d in &deltas {
            sum.add(d, 1.0).unwrap();
        }
        assert!(FedAvg.aggregate(&[0.0, 0.0], &sum).unwrap()[0] < -100.0);
        // An even count takes the mean of the two middle values; no trimming is the mean.
        assert_eq!(Median.aggregate_individual(&[1.0], &[vec![1.0], vec![3.0]]).unwrap(), vec![3.0]);
        assert_eq!(TrimmedMean { trim: 0.0 }.aggregate_individual(&[0.0], &[vec![1.0], vec![3.0]]).unwrap(), vec![2.0]);
        assert!(matches!(Median.aggregate_individual(&[0.0], &[]), Err(AggregateError::Empty)));
        assert!(matches!(
            Median.aggregate_individual(&[0.0], &[vec![f32::NAN]]),
            Err(AggregateError::NonFinite { index: 0 })
        ));
    }

    #[test]
    fn fedavg_weights_by_examples() {
        let mut sum = WeightedSum::new(2);
        sum.add(&[1.0, 0.0], 1.0).unwrap();
        sum.add(&[4.0, 3.0], 2.0).unwrap();
        let next = FedAvg.aggregate(&[1.0, 1.0], &sum).unwrap();
        assert_eq!(next, vec![4.0, 3.0]);
    }

    #[test]
    fn wrong_shape_bad_weight_and_nan_leave_the_sum_unchanged() {
        let mut sum = WeightedSum::new(2);
        sum.add(&[1.0, 1.0], 1.0).unwrap();
        let before = sum.clone();
        assert_eq!(sum.add(&[1.0], 1.0), Err(AggregateError::WrongShape { expected: 2, actual: 1 }));
        assert_eq!(sum.add(&[1.0, 1.0], 0.0), Err(AggregateError::BadWeight(0.0)));
        assert_eq!(sum.add(&[1.0, f32::NAN], 1.0), Err(AggregateError::NonFinite { index: 1 }));
        assert_eq!(sum, before);
    }

    /// The fixed-point sum is exact: the same updates in any order give the same bits, where an `f64` sum
    /// of these values depends on the order.
    #[test]
    fn the_sum_does_not_depend_on_the_order_of_the_updates() {
        let updates: [(&[f32], f64); 3] = [(&[1e-7, 3.0], 1.0), (&[1e8, -3.0], 7.0), (&[-1e8, 1e-3], 7.0)];
        let orders = [[0, 1, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
        let sums: Vec<WeightedSum> = orders
            .iter()
            .map(|order| {
                let mut sum = WeightedSum::new(2);
                for &i in order {
                    sum.add(updates[i].0, updates[i].1).unwrap();
                }
                sum
            })
            .collect();
        assert!(sums.windows(2).all(|w| w[0] == w[1]));
        let naive = |order: &[usize]| order.iter().map(|&i| updates[i].1 * f64::from(updates[i].0[0])).sum::<f64>();
        assert_ne!(naive(&orders[0]), naive(&orders[3]), "the example must expose f64's order dependence");
        let mean = sums[0].mean().unwrap();
        assert!((mean[0] - 1e-7 / 15.0).abs() < 1e-14, "{mean:?}");
    }

    #[test]
    fn an_out_of_range_update_is_refused_and_leaves_the_sum_unchanged() {
        let mut sum = WeightedSum::new(2);
        sum.add(&[1.0, 1.0], 2.0).unwrap();
        let before = sum.clone();
        // The first value is added before the second is found out of range, and taken out again exactly.
        assert_eq!(sum.add(&[1.0, 1e10], 1e9), Err(AggregateError::OutOfRange { index: 1 }));
        assert_eq!(sum, before);
        assert!(matches!(WeightedSum::from_parts(vec![1e17], 1.0, 1), Err(AggregateError::OutOfRange { index: 0 })));
    }

    #[test]
    fn empty_round_cannot_aggregate() {
        assert_eq!(FedAvg.aggregate(&[0.0], &WeightedSum::new(1)), Err(AggregateError::Empty));
    }

    #[test]
    fn fedadam_first_step_moves_by_about_lr_in_the_delta_direction() {
        let mut adam = FedAdam::new(0.1, 0.9, 0.99, 1e-9);
        let mut sum = WeightedSum::new(2);
        sum.add(&[0.5, -2.0], 1.0).unwrap();
        let next = adam.aggregate(&[0.0, 0.0], &sum).unwrap();
        // m = 0.1 d, v = 0.01 d², so the step is lr · 0.1 d / (0.1 |d|) = lr · sign(d).
        assert!((next[0] - 0.1).abs() < 1e-5 && (next[1] + 0.1).abs() < 1e-5, "{next:?}");
        let state = adam.state();
        let mut restored = FedAdam::new(0.1, 0.9, 0.99, 1e-9);
        restored.restore(&state);
        assert_eq!(restored.m, adam.m);
    }

    proptest! {
        #[test]
        fn streaming_sum_equals_batch_mean(
            updates in proptest::collection::vec((proptest::collection::vec(-10f32..10.0, 4), 1u32..1000), 1..20)
        ) {
            let mut sum = WeightedSum::new(4);
            for (u, n) in &updates { sum.add(u, f64::from(*n)).unwrap(); }
            let total: f64 = updates.iter().map(|(_, n)| f64::from(*n)).sum();
            let mean = sum.mean().unwrap();
            for (j, m) in mean.iter().enumerate() {
                let expect: f64 = updates.iter().map(|(u, n)| f64::from(u[j]) * f64::from(*n)).sum::<f64>() / total;
                prop_assert!((m - expect).abs() < 1e-9);
            }
        }
    }
}

//! The validation gate: decides whether a candidate model version may replace the production version.
//!
//! A candidate is promoted only if all three rules pass (TFX Evaluator's "blessing" with a value threshold and a
//! change threshold, plus a per-slice floor):
//! 1. **threshold** — its aggregate primary metric meets [`GateConfig::min_primary`];
//! 2. **regression** — it is no worse than the current production version by more than
//!    [`GateConfig::max_regression`] (skipped when there is no production version);
//! 3. **slice floor** — every client's own value meets [`GateConfig::min_slice`].
//!
//! The gate is a pure function of its inputs; the registry records the decision and its reasons.

use cohort_core::metrics::{Direction, FederatedEval, PrimaryMetric};
use serde::{Deserialize, Serialize};

/// The gate's rules. Every field has a serde default, so `[gate]` with no keys is a valid config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// The metric the rules compare (default `accuracy`; use `r2` or `mse` for regression).
    #[serde(default)]
    pub primary_metric: PrimaryMetric,
    /// Absolute threshold on the aggregate primary metric: a minimum for higher-is-better metrics, a maximum for
    /// lower-is-better ones. `None` (the default) disables the rule, since no threshold suits every task.
    #[serde(default)]
    pub min_primary: Option<f64>,
    /// How much worse than production the candidate may be, in the metric's own units (default 0: no worse at
    /// all). Must be ≥ 0.
    #[serde(default)]
    pub max_regression: f64,
    /// Floor for every client's own value of the primary metric (a maximum for lower-is-better metrics).
    /// `None` (the default) disables the rule.
    #[serde(default)]
    pub min_slice: Option<f64>,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self { primary_metric: PrimaryMetric::Accuracy, min_primary: None, max_regression: 0.0, min_slice: None }
    }
}

/// A gate configuration that cannot be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GateError {
    /// A threshold or tolerance that is not a finite number, or a negative tolerance.
    #[error("invalid gate config: {0}")]
    Invalid(String),
}

/// The gate's verdict on one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateDecision {
    /// Whether the candidate may become the production version.
    pub promote: bool,
    /// Why, one sentence per rule, with the numbers. When `promote` is false these are the failed rules only;
    /// when it is true they are the rules that passed (and notes on rules that did not apply).
    pub reasons: Vec<String>,
}

impl GateDecision {
    /// The decision for a version that no client evaluated: not promoted.
    pub fn no_evaluation() -> Self {
        Self { promote: false, reasons: vec!["no client reported evaluation metrics for this version".into()] }
    }

    /// The reasons as one line, separated by `"; "`.
    pub fn summary(&self) -> String {
        self.reasons.join("; ")
    }
}

impl GateConfig {
    /// Checks that the numbers are usable.
    ///
    /// # Errors
    /// [`GateError::Invalid`] for a non-finite threshold or a negative or non-finite tolerance.
    pub fn validate(&self) -> Result<(), GateError> {
        if !self.max_regression.is_finite() || self.max_regression < 0.0 {
            return Err(GateError::Invalid(format!("max_regression {} must be a number ≥ 0", self.max_regression)));
        }
        for (name, v) in [("min_primary", self.min_primary), ("min_slice", self.min_slice)] {
            if v.is_some_and(|v| !v.is_finite()) {
                return Err(GateError::Invalid(format!("{name} must be a finite number")));
            }
        }
        Ok(())
    }

    /// Applies the three rules to `candidate`, comparing with `production` when there is one.
    ///
    /// A missing or non-finite primary metric blocks promotion whatever rules are configured (the gate never
    /// promotes on missing evidence). A production version without the metric cannot be compared, which is noted and does
    /// not block. An invalid config (see [`GateConfig::validate`]) blocks promotion with the problem as reason.
    ///
    /// # Example
    /// ```
    /// use cohort_registry::gate::GateConfig;
    /// use cohort_core::metrics::{EvalMetrics, FederatedEval};
    /// let m = |acc| EvalMetrics { examples: 10, values: [("accuracy".to_owned(), acc)].into() };
    /// let candidate = FederatedEval::from_slices(vec![("a".into(), m(0.91))]).unwrap();
    /// let gate = GateConfig { min_primary: Some(0.93), ..GateConfig::default() };
    /// let d = gate.decide(&candidate, None);
    /// assert!(!d.promote);
    /// assert_eq!(d.reasons, ["accuracy 0.9100 < threshold 0.9300"]);
    /// ```
    pub fn decide(&self, candidate: &FederatedEval, production: Option<&FederatedEval>) -> GateDecision {
        if let Err(e) = self.validate() {
            return GateDecision { promote: false, reasons: vec![e.to_string()] };
        }
        let metric = self.primary_metric;
        let (good, bad_op) = ops(metric);
        let mut passed = Vec::new();
        let mut failed = Vec::new();
        let value = metric.value(&candidate.aggregate);
        // No evidence, no promotion: whatever rules are configured, a candidate without the metric fails.
        if value.is_none() {
            failed.push(format!(
                "candidate has no {metric}: the gate promotes no version without its primary metric (set [gate] \
                 primary_metric to one the task reports)"
            ));
        }

        // Rule 1: absolute threshold.
        match (self.min_primary, value) {
            (None, _) | (Some(_), None) => {}
            (Some(t), Some(v)) if metric.meets(v, t) => passed.push(format!("{metric} {v:.4} {good} threshold {t:.4}")),
            (Some(t), Some(v)) => failed.push(format!("{metric} {v:.4} {bad_op} threshold {t:.4}")),
        }

        // Rule 2: no worse than production by more than the tolerance.
        match production.map(|p| metric.value(&p.aggregate)) {
            None => passed.push("no production version to compare with".into()),
            Some(None) => passed.push(format!("production version has no {metric}; regression check skipped")),
            Some(Some(p)) => match value {
                None => {}
                Some(v) => {
                    let worse = metric.worsening(v, p);
                    let tol = self.max_regression;
                    if worse > tol {
                        failed.push(format!(
                            "{metric} {v:.4} is {worse:.4} worse than production {p:.4} (tolerance {tol:.4})"
                        ));
                    } else {
                        passed.push(format!(
                            "{metric} {v:.4} vs production {p:.4}: change {:+.4} within tolerance {tol:.4}",
                            v - p
                        ));
                    }
                }
            },
        }

        // Rule 3: per-client floor.
        if let Some(floor) = self.min_slice {
            if candidate.slices.is_empty() {
                failed.push(format!("no client slices to check against the floor {floor:.4}"));
            }
            let mut all_ok = !candidate.slices.is_empty();
            for (client, slice) in &candidate.slices {
                match metric.value(slice) {
                    None => {
                        all_ok = false;
                        failed.push(format!("client {client} reported no {metric}"));
                    }
                    Some(v) if !metric.meets(v, floor) => {
                        all_ok = false;
                        let word = if metric.direction() == Direction::HigherIsBetter { "below" } else { "above" };
                        failed.push(format!("client {client} slice {metric} {v:.4} {word} floor {floor:.4}"));
                    }
                    Some(_) => {}
                }
            }
            if all_ok {
                passed.push(format!("all {} client slices meet the {metric} floor {floor:.4}", candidate.slices.len()));
            }
        }

        if failed.is_empty() {
            GateDecision { promote: true, reasons: passed }
        } else {
            GateDecision { promote: false, reasons: failed }
        }
    }
}

/// The comparison words for a pass and a failure of a threshold.
fn ops(metric: PrimaryMetric) -> (&'static str, &'static str) {
    match metric.direction() {
        Direction::HigherIsBetter => ("≥", "<"),
        Direction::LowerIsBetter => ("≤", ">"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_core::metrics::EvalMetrics;

    fn m(name: &str, v: f64, n: u64) -> EvalMetrics {
        EvalMetrics { examples: n, values: [(name.to_owned(), v)].into() }
    }

    fn eval(name: &str, slices: &[(&str, f64, u64)]) -> FederatedEval {
        FederatedEval::from_slices(slices.iter().map(|(c, v, n)| ((*c).to_owned(), m(name, *v, *n))).collect()).unwrap()
    }

    #[test]
    fn defaults_promote_a_first_candidate_and_parse_from_empty_toml() {
        let cfg: GateConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg, GateConfig::default());
        let d = cfg.decide(&eval("accuracy", &[("a", 0.5, 10)]), None);
        assert!(d.promote);
        assert_eq!(d.reasons, ["no production version to compare with"]);
        assert!(serde_json::from_str::<GateConfig>(r#"{"bogus": 1}"#).is_err());
        let cfg: GateConfig = serde_json::from_str(r#"{"primary_metric": "mse", "max_regression": 0.1}"#).unwrap();
        assert_eq!(cfg.primary_metric, PrimaryMetric::Mse);
    }

    #[test]
    fn threshold_rule() {
        let cfg = GateConfig { min_primary: Some(0.93), ..GateConfig::default() };
        let d = cfg.decide(&eval("accuracy", &[("a", 0.91, 10)]), None);
        assert!(!d.promote);
        assert_eq!(d.reasons, ["accuracy 0.9100 < threshold 0.9300"]);
        let d = cfg.decide(&eval("accuracy", &[("a", 0.95, 10)]), None);
        assert!(d.promote);
        assert!(d.reasons.contains(&"accuracy 0.9500 ≥ threshold 0.9300".to_owned()));
        // A candidate without the metric never passes a threshold.
        let d = cfg.decide(&eval("r2", &[("a", 0.95, 10)]), None);
        assert!(!d.promote);
        assert_eq!(d.reasons.len(), 1, "{:?}", d.reasons);
        assert!(d.reasons[0].starts_with("candidate has no accuracy: the gate promotes no version"), "{:?}", d.reasons);
    }

    /// "No metric for the task means no promotion, not skipped": even with no rule configured and no production
    /// version, a candidate without the primary metric (a regression model under an accuracy gate) is not
    /// promoted.
    #[test]
    fn a_candidate_without_the_primary_metric_is_never_promoted() {
        let d = GateConfig::default().decide(&eval("r2", &[("a", 0.9, 10)]), None);
        assert!(!d.promote, "{:?}", d.reasons);
        assert!(d.reasons[0].contains("set [gate] primary_metric"), "{:?}", d.reasons);
        let production = eval("accuracy", &[("a", 0.9, 10)]);
        let d = GateConfig::default().decide(&eval("r2", &[("a", 0.9, 10)]), Some(&production));
        assert!(!d.promote, "{:?}", d.reasons);
        let r2 = GateConfig { primary_metric: PrimaryMetric::R2, ..GateConfig::default() };
        assert!(r2.decide(&eval("r2", &[("a", 0.9, 10)]), None).promote);
    }

    #[test]
    fn threshold_is_a_maximum_for_lower_is_better_metrics() {
        let cfg = GateConfig { primary_metric: PrimaryMetric::Mse, min_primary: Some(0.4), ..GateConfig::default() };
        let d = cfg.decide(&eval("mse", &[("a", 0.52, 10)]), None);
        assert!(!d.promote);
        assert_eq!(d.reasons, ["mse 0.5200 > threshold 0.4000"]);
        assert!(cfg.decide(&eval("mse", &[("a", 0.3, 10)]), None).promote);
    }

    #[test]
    fn regression_rule_against_production() {
        let production = eval("accuracy", &[("a", 0.90, 10)]);
        let strict = GateConfig::default();
        let d = strict.decide(&eval("accuracy", &[("a", 0.85, 10)]), Some(&production));
        assert!(!d.promote);
        assert_eq!(d.reasons, ["accuracy 0.8500 is 0.0500 worse than production 0.9000 (tolerance 0.0000)"]);
        let tolerant = GateConfig { max_regression: 0.06, ..GateConfig::default() };
        let d = tolerant.decide(&eval("accuracy", &[("a", 0.85, 10)]), Some(&production));
        assert!(d.promote, "{d:?}");
        assert_eq!(d.reasons, ["accuracy 0.8500 vs production 0.9000: change -0.0500 within tolerance 0.0600"]);
        assert!(strict.decide(&eval("accuracy", &[("a", 0.92, 10)]), Some(&production)).promote);
        // Lower-is-better: a larger MSE is worse.
        let mse = GateConfig { primary_metric: PrimaryMetric::Mse, max_regression: 0.05, ..GateConfig::default() };
        let d = mse.decide(&eval("mse", &[("a", 0.6, 10)]), Some(&eval("mse", &[("a", 0.5, 10)])));
        assert!(!d.promote);
        assert_eq!(d.reasons, ["mse 0.6000 is 0.1000 worse than production 0.5000 (tolerance 0.0500)"]);
        // Production without the metric: noted, not blocking.
        let d = strict.decide(&eval("accuracy", &[("a", 0.5, 10)]), Some(&eval("r2", &[("a", 0.9, 10)])));
        assert!(d.promote);
        assert_eq!(d.reasons, ["production version has no accuracy; regression check skipped"]);
    }

    #[test]
    fn slice_floor_rule_names_the_client() {
        let cfg = GateConfig { min_slice: Some(0.80), ..GateConfig::default() };
        let candidate = eval("accuracy", &[("hospital-a", 0.95, 90), ("hospital-b", 0.71, 10)]);
        // The aggregate (0.926) is fine; one hospital is not.
        let d = cfg.decide(&candidate, None);
        assert!(!d.promote);
        assert_eq!(d.reasons, ["client hospital-b slice accuracy 0.7100 below floor 0.8000"]);
        let mut missing = eval("accuracy", &[("hospital-a", 0.95, 90)]);
        missing.slices.insert("hospital-c".into(), m("loss", 0.3, 5));
        let d = cfg.decide(&missing, None);
        assert!(!d.promote);
        assert_eq!(d.reasons, ["client hospital-c reported no accuracy"]);
        let ok = eval("accuracy", &[("hospital-a", 0.95, 90), ("hospital-b", 0.81, 10)]);
        let d = cfg.decide(&ok, None);
        assert!(d.promote);
        assert!(d.reasons.contains(&"all 2 client slices meet the accuracy floor 0.8000".to_owned()));
    }

    #[test]
    fn all_failures_are_reported_together() {
        let cfg =
            GateConfig { min_primary: Some(0.9), max_regression: 0.01, min_slice: Some(0.8), ..GateConfig::default() };
        let candidate = eval("accuracy", &[("a", 0.88, 10), ("b", 0.7, 10)]);
        let d = cfg.decide(&candidate, Some(&eval("accuracy", &[("a", 0.95, 10)])));
        assert!(!d.promote);
        assert_eq!(d.reasons.len(), 3, "{d:?}");
        assert!(d.reasons[0].starts_with("accuracy 0.7900 < threshold"));
        assert!(d.reasons[1].contains("worse than production 0.9500"));
        assert!(d.reasons[2].contains("client b slice"));
    }

    #[test]
    fn invalid_config_blocks_promotion() {
        let cfg = GateConfig { max_regression: -0.1, ..GateConfig::default() };
        assert!(cfg.validate().is_err());
        let d = cfg.decide(&eval("accuracy", &[("a", 0.99, 10)]), None);
        assert!(!d.promote);
        assert!(d.reasons[0].contains("max_regression"));
        assert!(!GateDecision::no_evaluation().promote);
    }
}

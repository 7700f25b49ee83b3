//! Evaluation metrics of a model on a node's held-out split, and their example-weighted aggregation.
//!
//! Classification ([`classification`]): mean cross-entropy loss, accuracy, AUC-ROC (binary: the rank statistic
//! with ties averaged, i.e. the Mann–Whitney U form, Hanley & McNeil 1982; multiclass: the macro mean of the
//! one-vs-rest AUCs, Provost & Domingos 2000), precision, recall and F1 (binary: positive class 1; multiclass:
//! macro mean over the classes that occur in the labels or the predictions, as scikit-learn does).
//! Regression ([`regression`]): MSE, MAE and R².
//!
//! Federated evaluation: each node reports an [`EvalMetrics`]; the coordinator combines them with
//! [`weighted_aggregate`] (weights = example counts) and keeps the per-node values as slices in a
//! [`FederatedEval`], so that a model that is good on average but bad for one node is visible.
//!
//! Every value this module produces is finite, so an [`EvalMetrics`] always serializes to JSON and back.

pub mod regression_sums;

use crate::model::TaskKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Names of the metrics this module computes, as used in [`EvalMetrics::values`].
pub mod names {
    /// Mean cross-entropy (classification) or mean squared error (regression).
    pub const LOSS: &str = "loss";
    /// Fraction of rows whose arg-max class equals the label.
    pub const ACCURACY: &str = "accuracy";
    /// Area under the ROC curve (binary) or macro one-vs-rest AUC (multiclass).
    pub const AUC: &str = "auc";
    /// Precision (binary: of class 1; multiclass: macro).
    pub const PRECISION: &str = "precision";
    /// Recall (binary: of class 1; multiclass: macro).
    pub const RECALL: &str = "recall";
    /// F1 score (binary: of class 1; multiclass: macro).
    pub const F1: &str = "f1";
    /// Mean squared error.
    pub const MSE: &str = "mse";
    /// Mean absolute error.
    pub const MAE: &str = "mae";
    /// Coefficient of determination.
    pub const R2: &str = "r2";
}

/// Probabilities are clamped to at least this before taking the logarithm, so the loss stays finite.
const MIN_PROBABILITY: f64 = 1e-12;

/// Metrics of one evaluation, by name, with the number of examples behind them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EvalMetrics {
    /// Number of examples evaluated.
    pub examples: u64,
    /// Metric values by name (see [`names`]: `loss`, `accuracy`, `auc`, `precision`, `recall`, `f1`, `mse`,
    /// `mae`, `r2`). A metric that is undefined for this data (e.g. AUC with one class present) is absent.
    pub values: BTreeMap<String, f64>,
}

/// Metrics that cannot be computed or combined.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// No examples.
    #[error("no examples to evaluate")]
    Empty,
    /// Predictions and labels disagree in shape.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A regression prediction or target that is NaN or infinite.
    #[error("{what} {index} is not finite ({value})")]
    NonFinite {
        /// `"prediction"` or `"target"`.
        what: &'static str,
        /// Row index of the first bad value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// Two slices with the same node name.
    #[error("two evaluation slices for node {0:?}")]
    DuplicateSlice(String),
    /// A reported metric outside its possible range (see [`EvalMetrics::validate`]).
    #[error("metric {name} = {value} is outside its range {range}")]
    OutOfRange {
        /// Metric name.
        name: String,
        /// Reported value.
        value: f64,
        /// The admissible range, for the message.
        range: &'static str,
    },
}

impl EvalMetrics {
    /// A metric by name.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }

    /// The primary metric: accuracy for classification, R² for regression (see [`PrimaryMetric::for_task`]).
    pub fn primary(&self) -> Option<(&'static str, f64)> {
        self.get(names::ACCURACY).map(|v| (names::ACCURACY, v)).or_else(|| self.get(names::R2).map(|v| (names::R2, v)))
    }

    /// Checks a report received from another node: every value finite, the known metrics inside their
    /// mathematical range (`accuracy`, `auc`, `precision`, `recall`, `f1` in \[0, 1\]; `loss`, `mse`, `mae` ≥ 0;
    /// `r2` ≤ 1), and no values without examples. Unknown metric names are allowed if finite.
    ///
    /// # Errors
    /// [`MetricsError::OutOfRange`] naming the first bad metric; [`MetricsError::Empty`] for values with zero
    /// examples.
    ///
    /// # Example
    /// ```
    /// use cohort_core::metrics::EvalMetrics;
    /// let ok = EvalMetrics { examples: 10, values: [("accuracy".to_owned(), 0.9)].into() };
    /// assert!(ok.validate().is_ok());
    /// let bad = EvalMetrics { examples: 10, values: [("accuracy".to_owned(), 1.5)].into() };
    /// assert!(bad.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), MetricsError> {
        if self.examples == 0 && !self.values.is_empty() {
            return Err(MetricsError::Empty);
        }
        self.validate_values()
    }

    /// Checks the values alone, as [`EvalMetrics::validate`] does, for a report whose example count is not sent
    /// (nodes do not send their exact held-out count; the coordinator weights reports itself).
    ///
    /// # Errors
    /// [`MetricsError::OutOfRange`] naming the first bad value.
    pub fn validate_values(&self) -> Result<(), MetricsError> {
        for (name, &value) in &self.values {
            let (ok, range) = match name.as_str() {
                names::ACCURACY | names::AUC | names::PRECISION | names::RECALL | names::F1 => {
                    ((0.0..=1.0).contains(&value), "[0, 1]")
                }
                names::LOSS | names::MSE | names::MAE => (value.is_finite() && value >= 0.0, "[0, ∞)"),
                names::R2 => (value.is_finite() && value <= 1.0, "(-∞, 1]"),
                _ => (value.is_finite(), "finite"),
            };
            if !ok {
                return Err(MetricsError::OutOfRange { name: name.clone(), value, range });
            }
        }
        Ok(())
    }
}

/// Whether larger values of a metric are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Larger is better (accuracy, AUC, F1, R²).
    HigherIsBetter,
    /// Smaller is better (loss, MSE, MAE).
    LowerIsBetter,
}

/// The metric that decides whether one model is better than another (used by the validation gate).
///
/// Serialized as its metric name (`"accuracy"`, `"auc"`, `"f1"`, `"r2"`, `"mse"`, `"mae"`, `"loss"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PrimaryMetric {
    /// Accuracy, higher is better. The default, and the primary metric of classification tasks.
    #[default]
    Accuracy,
    /// AUC-ROC, higher is better.
    Auc,
    /// F1, higher is better.
    F1,
    /// R², higher is better. The primary metric of regression tasks.
    R2,
    /// Mean squared error, lower is better.
    Mse,
    /// Mean absolute error, lower is better.
    Mae,
    /// Loss, lower is better.
    Loss,
}

impl PrimaryMetric {
    /// The default primary metric of a task: accuracy for classification, R² for regression.
    pub fn for_task(task: TaskKind) -> Self {
        match task {
            TaskKind::Binary | TaskKind::Multiclass => Self::Accuracy,
            TaskKind::Regression => Self::R2,
        }
    }

    /// The metric's name in [`EvalMetrics::values`].
    pub fn name(self) -> &'static str {
        match self {
            Self::Accuracy => names::ACCURACY,
            Self::Auc => names::AUC,
            Self::F1 => names::F1,
            Self::R2 => names::R2,
            Self::Mse => names::MSE,
            Self::Mae => names::MAE,
            Self::Loss => names::LOSS,
        }
    }

    /// Whether larger values are better.
    pub fn direction(self) -> Direction {
        match self {
            Self::Accuracy | Self::Auc | Self::F1 | Self::R2 => Direction::HigherIsBetter,
            Self::Mse | Self::Mae | Self::Loss => Direction::LowerIsBetter,
        }
    }

    /// The metric's raw value in `metrics`, if present and finite.
    pub fn value(self, metrics: &EvalMetrics) -> Option<f64> {
        metrics.get(self.name()).filter(|v| v.is_finite())
    }

    /// The value oriented so that higher is always better: the value itself, or its negation for
    /// lower-is-better metrics (e.g. negative MSE).
    ///
    /// # Example
    /// ```
    /// use cohort_core::metrics::{EvalMetrics, PrimaryMetric};
    /// let m = EvalMetrics { examples: 4, values: [("mse".to_owned(), 0.25)].into() };
    /// assert_eq!(PrimaryMetric::Mse.score(&m), Some(-0.25));
    /// ```
    pub fn score(self, metrics: &EvalMetrics) -> Option<f64> {
        self.value(metrics).map(|v| self.orient(v))
    }

    /// Orients a raw value of this metric so that higher is better.
    pub fn orient(self, value: f64) -> f64 {
        match self.direction() {
            Direction::HigherIsBetter => value,
            Direction::LowerIsBetter => -value,
        }
    }

    /// How much worse `candidate` is than `reference` in this metric (positive = worse, in the metric's units).
    pub fn worsening(self, candidate: f64, reference: f64) -> f64 {
        self.orient(reference) - self.orient(candidate)
    }

    /// Whether `value` meets a threshold: `value ≥ threshold` when higher is better, `value ≤ threshold` otherwise.
    pub fn meets(self, value: f64, threshold: f64) -> bool {
        self.orient(value) >= self.orient(threshold)
    }
}

impl fmt::Display for PrimaryMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A federated evaluation: the example-weighted aggregate and the per-node slices it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FederatedEval {
    /// Example-weighted mean over the slices (see [`weighted_aggregate`]).
    pub aggregate: EvalMetrics,
    /// Each node's own metrics, by node name.
    pub slices: BTreeMap<String, EvalMetrics>,
}

impl FederatedEval {
    /// Aggregates per-node reports, keeping them as slices.
    ///
    /// # Errors
    /// [`MetricsError::DuplicateSlice`] when a node appears twice; [`MetricsError::Empty`] when no node reported
    /// any examples.
    ///
    /// # Example
    /// ```
    /// use cohort_core::metrics::{EvalMetrics, FederatedEval};
    /// let m = |acc, n| EvalMetrics { examples: n, values: [("accuracy".to_owned(), acc)].into() };
    /// let e = FederatedEval::from_slices(vec![("a".into(), m(1.0, 30)), ("b".into(), m(0.6, 10))]).unwrap();
    /// assert!((e.aggregate.get("accuracy").unwrap() - 0.9).abs() < 1e-12);
    /// assert_eq!(e.slices["b"].get("accuracy"), Some(0.6));
    /// ```
    pub fn from_slices(slices: Vec<(String, EvalMetrics)>) -> Result<Self, MetricsError> {
        let aggregate = weighted_aggregate(&slices)?;
        let mut map = BTreeMap::new();
        for (name, metrics) in slices {
            if map.contains_key(&name) {
                return Err(MetricsError::DuplicateSlice(name));
            }
            map.insert(name, metrics);
        }
        Ok(Self { aggregate, slices: map })
    }
}

/// Replaces a non-finite probability by 0, the worst case, so a diverged model scores badly instead of failing.
fn sanitize(p: f32) -> f64 {
    if p.is_finite() { f64::from(p) } else { 0.0 }
}

/// Classification metrics from class probabilities (`rows × classes`, row-major) and labels in `0..classes`.
///
/// The predicted class of a row is its arg-max (the first one on ties). Non-finite probabilities are treated as
/// 0 (the worst case), so a diverged model yields bad but finite metrics. For two classes the AUC scores rows by
/// the probability of class 1; precision, recall and F1 are those of class 1. For more classes they are macro
/// means (AUC over the classes that have both positives and negatives; precision, recall and F1 over the classes
/// present in the labels or the predictions, a class with no predicted rows having precision 0). AUC is absent
/// when it is undefined (only one class present).
///
/// # Errors
/// [`MetricsError::Empty`] on no rows; [`MetricsError::Shape`] on fewer than two classes, a probability count
/// that is not `rows × classes`, or a label outside `0..classes`.
///
/// # Example
/// ```
/// use cohort_core::metrics::classification;
/// let probs = [0.2, 0.8, 0.7, 0.3];
/// let m = classification(&probs, 2, &[1, 0]).unwrap();
/// assert_eq!(m.get("accuracy"), Some(1.0));
/// assert_eq!(m.get("auc"), Some(1.0));
/// ```
pub fn classification(probs: &[f32], classes: usize, labels: &[usize]) -> Result<EvalMetrics, MetricsError> {
    let n = labels.len();
    if n == 0 {
        return Err(MetricsError::Empty);
    }
    if classes < 2 || Some(probs.len()) != n.checked_mul(classes) {
        return Err(MetricsError::Shape(format!("{} probabilities for {n} rows × {classes} classes", probs.len())));
    }
    if let Some(bad) = labels.iter().find(|&&l| l >= classes) {
        return Err(MetricsError::Shape(format!("label {bad} outside 0..{classes}")));
    }
    let rows: Vec<Vec<f64>> = probs.chunks_exact(classes).map(|r| r.iter().copied().map(sanitize).collect()).collect();
    let predicted: Vec<usize> = rows
        .iter()
        .map(|r| r.iter().enumerate().fold((0, f64::MIN), |best, (i, &p)| if p > best.1 { (i, p) } else { best }).0)
        .collect();
    let loss = rows.iter().zip(labels).map(|(r, &l)| -r[l].max(MIN_PROBABILITY).ln()).sum::<f64>() / n as f64;
    let accuracy = predicted.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / n as f64;

    // Classes over which precision/recall/F1 are averaged.
    let prf_classes: Vec<usize> = if classes == 2 {
        vec![1]
    } else {
        (0..classes).filter(|c| labels.contains(c) || predicted.contains(c)).collect()
    };
    let (mut precision, mut recall, mut f1) = (0.0, 0.0, 0.0);
    for &c in &prf_classes {
        let (p, r, f) = precision_recall_f1(&predicted, labels, c);
        precision += p;
        recall += r;
        f1 += f;
    }
    let k = prf_classes.len() as f64;

    let auc_classes: Vec<usize> = if classes == 2 { vec![1] } else { (0..classes).collect() };
    let aucs: Vec<f64> = auc_classes
        .iter()
        .filter_map(|&c| {
            let scores: Vec<f64> = rows.iter().map(|row| row[c]).collect();
            let is_pos: Vec<bool> = labels.iter().map(|&l| l == c).collect();
            auc(&scores, &is_pos)
        })
        .collect();

    let mut values = BTreeMap::new();
    values.insert(names::LOSS.into(), loss);
    values.insert(names::ACCURACY.into(), accuracy);
    values.insert(names::PRECISION.into(), precision / k);
    values.insert(names::RECALL.into(), recall / k);
    values.insert(names::F1.into(), f1 / k);
    if !aucs.is_empty() {
        values.insert(names::AUC.into(), aucs.iter().sum::<f64>() / aucs.len() as f64);
    }
    Ok(EvalMetrics { examples: n as u64, values })
}

/// The confusion-matrix cell of every row: `true class · classes + predicted class`, the prediction being the most
/// probable class. The input of a DP evaluation release: one row adds 1 to one cell, so the cell counts have
/// L1 sensitivity 1 under add/remove.
///
/// # Errors
/// [`MetricsError::Shape`] as [`classification`].
pub fn confusion_cells(probs: &[f32], classes: usize, labels: &[usize]) -> Result<Vec<usize>, MetricsError> {
    if classes < 2 || Some(probs.len()) != labels.len().checked_mul(classes) {
        return Err(MetricsError::Shape(format!(
            "{} probabilities for {} rows × {classes} classes",
            probs.len(),
            labels.len()
        )));
    }
    if let Some(bad) = labels.iter().find(|&&l| l >= classes) {
        return Err(MetricsError::Shape(format!("label {bad} outside 0..{classes}")));
    }
    Ok(probs
        .chunks_exact(classes)
        .zip(labels)
        .map(|(row, &l)| {
            let predicted = row
                .iter()
                .map(|&p| sanitize(p))
                .enumerate()
                .fold((0, f64::MIN), |best, (i, p)| if p > best.1 { (i, p) } else { best })
                .0;
            l * classes + predicted
        })
        .collect())
}

/// Accuracy, precision, recall and F1 from a (noisy) confusion matrix, `counts[true · classes + predicted]`, as
/// [`classification`] computes them from exact predictions (binary: of class 1; multiclass: macro-averaged over
/// the classes with support). Negative noisy counts are clamped to 0 first; all of it is post-processing of the
/// release, so it spends nothing. `examples` is the (noisy) total. Loss and AUC need per-row scores and are not
/// derived.
///
/// # Errors
/// [`MetricsError::Shape`] when `counts` is not `classes²` long.
pub fn from_confusion(counts: &[i64], classes: usize) -> Result<EvalMetrics, MetricsError> {
    if classes < 2 || counts.len() != classes * classes {
        return Err(MetricsError::Shape(format!("{} cells for {classes} classes", counts.len())));
    }
    let c: Vec<f64> = counts.iter().map(|&v| v.max(0) as f64).collect();
    let total: f64 = c.iter().sum();
    if total <= 0.0 {
        return Ok(EvalMetrics { examples: 0, values: BTreeMap::new() });
    }
    let cell = |t: usize, p: usize| c[t * classes + p];
    let accuracy = (0..classes).map(|k| cell(k, k)).sum::<f64>() / total;
    let prf = |k: usize| {
        let tp = cell(k, k);
        let fp: f64 = (0..classes).filter(|&t| t != k).map(|t| cell(t, k)).sum();
        let fneg: f64 = (0..classes).filter(|&p| p != k).map(|p| cell(k, p)).sum();
        let p = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
        let r = if tp + fneg > 0.0 { tp / (tp + fneg) } else { 0.0 };
        let f = if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 };
        (p, r, f)
    };
    let averaged: Vec<usize> = if classes == 2 {
        vec![1]
    } else {
        (0..classes).filter(|&k| (0..classes).any(|o| cell(k, o) + cell(o, k) > 0.0)).collect()
    };
    let k = averaged.len().max(1) as f64;
    let (p, r, f) = averaged.iter().map(|&i| prf(i)).fold((0.0, 0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
    let mut values = BTreeMap::new();
    values.insert(names::ACCURACY.into(), accuracy);
    values.insert(names::PRECISION.into(), p / k);
    values.insert(names::RECALL.into(), r / k);
    values.insert(names::F1.into(), f / k);
    Ok(EvalMetrics { examples: total as u64, values })
}

/// Precision, recall and F1 of class `c` (0 where the denominator is 0, as scikit-learn's `zero_division=0`).
fn precision_recall_f1(predicted: &[usize], labels: &[usize], c: usize) -> (f64, f64, f64) {
    let (mut tp, mut fp, mut fneg) = (0.0, 0.0, 0.0);
    for (&p, &l) in predicted.iter().zip(labels) {
        match (p == c, l == c) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => fneg += 1.0,
            (false, false) => {}
        }
    }
    let p = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
    let r = if tp + fneg > 0.0 { tp / (tp + fneg) } else { 0.0 };
    let f = if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 };
    (p, r, f)
}

/// AUC-ROC as the probability that a random positive outranks a random negative, ties counting one half
/// (the Mann–Whitney U statistic divided by `n_pos · n_neg`, computed from mid-ranks in O(n log n)).
///
/// Returns `None` when only one class is present (or the input is empty, or the lengths differ): the AUC is
/// undefined there. NaN scores rank below every number.
///
/// # Example
/// ```
/// use cohort_core::metrics::auc;
/// assert_eq!(auc(&[0.8, 0.4, 0.6, 0.2], &[true, true, false, false]), Some(0.75));
/// assert_eq!(auc(&[0.1, 0.2], &[true, true]), None);
/// ```
pub fn auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    if scores.len() != positive.len() {
        return None;
    }
    let key = |v: f64| if v.is_nan() { f64::NEG_INFINITY } else { v };
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| key(scores[a]).total_cmp(&key(scores[b])));
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && key(scores[order[j + 1]]) == key(scores[order[i]]) {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &idx in &order[i..=j] {
            ranks[idx] = rank;
        }
        i = j + 1;
    }
    let n_pos = positive.iter().filter(|&&p| p).count() as f64;
    let n_neg = positive.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return None;
    }
    let rank_sum: f64 = ranks.iter().zip(positive).filter(|(_, p)| **p).map(|(r, _)| r).sum();
    Some((rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg))
}

/// Regression metrics: MSE (also reported as `loss`), MAE and R² = 1 − SS_res / SS_tot.
///
/// When the targets are constant (SS_tot = 0) R² follows scikit-learn's `force_finite` convention: 1 for a
/// perfect prediction, 0 otherwise.
///
/// # Errors
/// [`MetricsError::Empty`] on no rows, [`MetricsError::Shape`] on mismatched lengths,
/// [`MetricsError::NonFinite`] on a NaN or infinite prediction or target.
///
/// # Example
/// ```
/// use cohort_core::metrics::regression;
/// let m = regression(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]).unwrap();
/// assert_eq!(m.get("mse"), Some(0.0));
/// assert_eq!(m.get("r2"), Some(1.0));
/// ```
pub fn regression(predicted: &[f32], actual: &[f32]) -> Result<EvalMetrics, MetricsError> {
    let n = actual.len();
    if n == 0 {
        return Err(MetricsError::Empty);
    }
    if predicted.len() != n {
        return Err(MetricsError::Shape(format!("{} predictions for {n} targets", predicted.len())));
    }
    for (what, values) in [("prediction", predicted), ("target", actual)] {
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(MetricsError::NonFinite { what, index, value: values[index] });
        }
    }
    let mean = actual.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    let (mut se, mut ae, mut tot) = (0.0, 0.0, 0.0);
    for (&p, &a) in predicted.iter().zip(actual) {
        let e = f64::from(p) - f64::from(a);
        se += e * e;
        ae += e.abs();
        tot += (f64::from(a) - mean).powi(2);
    }
    let r2 = if tot > 0.0 {
        1.0 - se / tot
    } else if se == 0.0 {
        1.0
    } else {
        0.0
    };
    let mut values = BTreeMap::new();
    values.insert(names::MSE.into(), se / n as f64);
    values.insert(names::LOSS.into(), se / n as f64);
    values.insert(names::MAE.into(), ae / n as f64);
    values.insert(names::R2.into(), r2);
    values.retain(|_, v| v.is_finite());
    Ok(EvalMetrics { examples: n as u64, values })
}

/// The metrics of a task from a model's outputs on a data set: [`classification`] for binary and multiclass
/// tasks (`outputs` are `rows × classes` probabilities, `targets` class ids), [`regression`] otherwise. Both
/// the nodes and the coordinator's central evaluation use this.
///
/// # Errors
/// [`MetricsError`] for empty or mismatched inputs.
pub fn for_task(task: TaskKind, outputs: &[f32], classes: usize, targets: &[f32]) -> Result<EvalMetrics, MetricsError> {
    match task {
        TaskKind::Regression => regression(outputs, targets),
        TaskKind::Binary | TaskKind::Multiclass => {
            let labels: Vec<usize> = targets.iter().map(|t| *t as usize).collect();
            classification(outputs, classes, &labels)
        }
    }
}

/// Example-weighted mean of per-node metrics: each metric is `Σ examples_i · value_i / Σ examples_i` over the
/// nodes that report it with a finite value (a metric missing at some node, e.g. an undefined AUC, is averaged
/// over the others). The result's `examples` is the total over all nodes. Slices are not kept here; see
/// [`FederatedEval::from_slices`].
///
/// Note that the weighted mean of per-node AUCs is not the AUC of the pooled data; it is the standard federated
/// summary because the pooled scores never leave the nodes.
///
/// # Errors
/// [`MetricsError::Empty`] when no node reported examples.
pub fn weighted_aggregate(slices: &[(String, EvalMetrics)]) -> Result<EvalMetrics, MetricsError> {
    let total: u64 = slices.iter().map(|(_, m)| m.examples).fold(0, u64::saturating_add);
    if total == 0 {
        return Err(MetricsError::Empty);
    }
    let mut sums: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (_, m) in slices {
        for (k, v) in &m.values {
            if v.is_finite() && m.examples > 0 {
                let e = sums.entry(k.clone()).or_default();
                e.0 += v * m.examples as f64;
                e.1 += m.examples as f64;
            }
        }
    }
    let values = sums
        .into_iter()
        .filter(|(_, (_, w))| *w > 0.0)
        .map(|(k, (s, w))| (k, s / w))
        .filter(|(_, v)| v.is_finite())
        .collect();
    Ok(EvalMetrics { examples: total, values })
}

#[cfg(test)]
mod confusion_tests {
    use super::*;

    /// On exact counts the confusion-matrix metrics equal the ones computed from the predictions.
    #[test]
    fn metrics_from_exact_counts_match_the_direct_computation() {
        let probs = [0.9, 0.1, 0.2, 0.8, 0.6, 0.4, 0.3, 0.7, 0.45, 0.55];
        let labels = [0, 1, 1, 1, 0];
        let direct = classification(&probs, 2, &labels).unwrap();
        let cells = confusion_cells(&probs, 2, &labels).unwrap();
        let mut counts = vec![0i64; 4];
        cells.iter().for_each(|&c| counts[c] += 1);
        let derived = from_confusion(&counts, 2).unwrap();
        assert_eq!(derived.examples, 5);
        for name in [names::ACCURACY, names::PRECISION, names::RECALL, names::F1] {
            assert!((derived.get(name).unwrap() - direct.get(name).unwrap()).abs() < 1e-12, "{name}");
        }
        // Noisy negative cells are clamped, and an all-zero matrix has no metrics.
        assert_eq!(from_confusion(&[-3, 0, 0, 2], 2).unwrap().get(names::ACCURACY), Some(1.0));
        assert!(from_confusion(&[-1, -1, 0, 0], 2).unwrap().values.is_empty());
        assert!(from_confusion(&[1, 2, 3], 2).is_err());
        assert!(confusion_cells(&probs, 2, &[0, 1, 2, 1, 0]).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn auc_matches_a_hand_computed_example() {
        // Positives 0.8, 0.4; negatives 0.6, 0.2: pairs (0.8>0.6, 0.8>0.2, 0.4<0.6, 0.4>0.2) → 3/4.
        assert_eq!(auc(&[0.8, 0.4, 0.6, 0.2], &[true, true, false, false]), Some(0.75));
        assert_eq!(auc(&[0.5, 0.5], &[true, false]), Some(0.5));
        assert_eq!(auc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(auc(&[], &[]), None);
        assert_eq!(auc(&[0.1], &[true, false]), None);
    }

    #[test]
    fn auc_counts_ties_as_one_half() {
        // Positives 0.5, 0.9; negatives 0.5, 0.1. Pairs: (0.5 vs 0.5) tie = 1/2, (0.5 > 0.1) = 1,
        // (0.9 > 0.5) = 1, (0.9 > 0.1) = 1 → 3.5 / 4.
        assert_eq!(auc(&[0.5, 0.9, 0.5, 0.1], &[true, true, false, false]), Some(0.875));
        // A perfectly wrong ranking.
        assert_eq!(auc(&[0.1, 0.2, 0.8, 0.9], &[true, true, false, false]), Some(0.0));
    }

    #[test]
    fn binary_classification_metrics() {
        let probs = [0.2, 0.8, 0.7, 0.3, 0.4, 0.6, 0.9, 0.1];
        let m = classification(&probs, 2, &[1, 0, 0, 0]).unwrap();
        assert_eq!(m.examples, 4);
        assert_eq!(m.get("accuracy"), Some(0.75));
        assert_eq!(m.get("precision"), Some(0.5));
        assert_eq!(m.get("recall"), Some(1.0));
        assert!(close(m.get("f1"), 2.0 / 3.0));
        // Scores for class 1: pos 0.8; negs 0.3, 0.6, 0.1 → AUC 1.
        assert_eq!(m.get("auc"), Some(1.0));
        let loss = -(0.8f32.ln() + 0.7f32.ln() + 0.4f32.ln() + 0.9f32.ln()) as f64 / 4.0;
        assert!((m.get("loss").unwrap() - loss).abs() < 1e-6);
        assert!(classification(&probs, 2, &[1, 0, 0]).is_err());
        assert_eq!(classification(&[], 2, &[]), Err(MetricsError::Empty));
    }

    #[test]
    fn single_class_has_no_auc_and_zero_precision_without_positive_predictions() {
        let m = classification(&[0.9, 0.1, 0.8, 0.2], 2, &[0, 0]).unwrap();
        assert_eq!(m.get("auc"), None);
        assert_eq!(m.get("accuracy"), Some(1.0));
        assert_eq!(m.get("precision"), Some(0.0));
        assert_eq!(m.get("recall"), Some(0.0));
        assert_eq!(m.get("f1"), Some(0.0));
    }

    #[test]
    fn multiclass_macro_metrics() {
        // Three classes, four rows. Predictions (arg-max): 0, 1, 2, 1. Labels: 0, 1, 2, 2.
        #[rustfmt::skip]
        let probs = [
            0.7, 0.2, 0.1,
            0.1, 0.8, 0.1,
            0.2, 0.2, 0.6,
            0.1, 0.5, 0.4,
        ];
        let m = classification(&probs, 3, &[0, 1, 2, 2]).unwrap();
        assert_eq!(m.get("accuracy"), Some(0.75));
        // Class 0: p 1, r 1. Class 1: p 1/2, r 1. Class 2: p 1, r 1/2.
        assert!(close(m.get("precision"), (1.0 + 0.5 + 1.0) / 3.0));
        assert!(close(m.get("recall"), (1.0 + 1.0 + 0.5) / 3.0));
        assert!(close(m.get("f1"), (1.0 + 2.0 / 3.0 + 2.0 / 3.0) / 3.0));
        // OvR AUCs: class 0 scores (0.7 | 0.1, 0.2, 0.1) → 1; class 1 (0.8 | 0.2, 0.2, 0.5) → 1;
        // class 2 positives 0.6, 0.4 vs negatives 0.1, 0.1 → 1. Macro = 1.
        assert_eq!(m.get("auc"), Some(1.0));
        assert!(matches!(classification(&probs, 3, &[0, 1, 2, 3]), Err(MetricsError::Shape(_))));
        assert!(matches!(classification(&probs[..11], 3, &[0, 1, 2, 2]), Err(MetricsError::Shape(_))));
        assert!(matches!(classification(&[1.0], 1, &[0]), Err(MetricsError::Shape(_))));
    }

    #[test]
    fn multiclass_macro_averages_only_present_classes() {
        // Classes 0 and 1 present; class 2 neither labelled nor predicted → excluded from the macro mean.
        let probs = [0.9, 0.05, 0.05, 0.1, 0.8, 0.1];
        let m = classification(&probs, 3, &[0, 1]).unwrap();
        assert_eq!(m.get("precision"), Some(1.0));
        assert_eq!(m.get("recall"), Some(1.0));
        assert_eq!(m.get("auc"), Some(1.0));
    }

    #[test]
    fn non_finite_probabilities_score_as_worst_case() {
        let m = classification(&[f32::NAN, f32::NAN, f32::NAN, f32::NAN], 2, &[1, 0]).unwrap();
        assert!(m.values.values().all(|v| v.is_finite()));
        assert!(close(m.get("loss"), -MIN_PROBABILITY.ln()));
        assert_eq!(m.get("auc"), Some(0.5));
        serde_json::to_string(&m).unwrap();
    }

    #[test]
    fn regression_metrics() {
        let m = regression(&[1.0, 2.0, 3.0], &[1.0, 2.0, 5.0]).unwrap();
        assert!(close(m.get("mse"), 4.0 / 3.0));
        assert!(close(m.get("mae"), 2.0 / 3.0));
        // Targets 1, 2, 5 have mean 8/3 and SS_tot = 25/9 + 4/9 + 49/9 = 78/9; SS_res = 4 → R² = 1 − 36/78.
        assert!(close(m.get("r2"), 1.0 - 36.0 / 78.0));
    }

    #[test]
    fn regression_degenerate_cases() {
        assert_eq!(regression(&[2.0, 2.0], &[2.0, 2.0]).unwrap().get("r2"), Some(1.0));
        assert_eq!(regression(&[1.0, 3.0], &[2.0, 2.0]).unwrap().get("r2"), Some(0.0));
        assert_eq!(regression(&[], &[]), Err(MetricsError::Empty));
        assert!(matches!(regression(&[1.0], &[1.0, 2.0]), Err(MetricsError::Shape(_))));
        assert_eq!(
            regression(&[1.0, f32::INFINITY], &[1.0, 2.0]),
            Err(MetricsError::NonFinite { what: "prediction", index: 1, value: f32::INFINITY })
        );
        assert!(matches!(regression(&[1.0], &[f32::NAN]), Err(MetricsError::NonFinite { what: "target", .. })));
    }

    #[test]
    fn aggregation_is_weighted_by_examples() {
        let a = EvalMetrics { examples: 30, values: [("accuracy".to_owned(), 1.0)].into() };
        let b = EvalMetrics { examples: 10, values: [("accuracy".to_owned(), 0.6), ("auc".to_owned(), 0.7)].into() };
        let m = weighted_aggregate(&[("a".into(), a.clone()), ("b".into(), b.clone())]).unwrap();
        assert_eq!(m.examples, 40);
        assert!(close(m.get("accuracy"), 0.9));
        // Only b reports AUC.
        assert!(close(m.get("auc"), 0.7));
        assert_eq!(weighted_aggregate(&[]), Err(MetricsError::Empty));
        let fe = FederatedEval::from_slices(vec![("a".into(), a.clone()), ("b".into(), b)]).unwrap();
        assert_eq!(fe.slices.len(), 2);
        assert_eq!(fe.aggregate, m);
        assert_eq!(
            FederatedEval::from_slices(vec![("a".into(), a.clone()), ("a".into(), a)]),
            Err(MetricsError::DuplicateSlice("a".into()))
        );
    }

    #[test]
    fn primary_metric_direction_and_serde() {
        let m = EvalMetrics { examples: 5, values: [("accuracy".to_owned(), 0.8), ("mse".to_owned(), 0.5)].into() };
        assert_eq!(PrimaryMetric::Accuracy.score(&m), Some(0.8));
        assert_eq!(PrimaryMetric::Mse.score(&m), Some(-0.5));
        assert_eq!(PrimaryMetric::R2.score(&m), None);
        assert_eq!(PrimaryMetric::for_task(TaskKind::Regression), PrimaryMetric::R2);
        assert_eq!(PrimaryMetric::for_task(TaskKind::Multiclass), PrimaryMetric::Accuracy);
        assert!((PrimaryMetric::Accuracy.worsening(0.85, 0.9) - 0.05).abs() < 1e-12);
        assert!((PrimaryMetric::Mse.worsening(0.6, 0.5) - 0.1).abs() < 1e-12);
        assert!(PrimaryMetric::Mse.meets(0.4, 0.5) && !PrimaryMetric::Mse.meets(0.6, 0.5));
        assert!(PrimaryMetric::Accuracy.meets(0.9, 0.9) && !PrimaryMetric::Accuracy.meets(0.89, 0.9));
        assert_eq!(serde_json::to_string(&PrimaryMetric::R2).unwrap(), "\"r2\"");
        assert_eq!(serde_json::from_str::<PrimaryMetric>("\"mse\"").unwrap(), PrimaryMetric::Mse);
    }

    #[test]
    fn validate_rejects_impossible_reports() {
        let mk = |k: &str, v: f64| EvalMetrics { examples: 3, values: [(k.to_owned(), v)].into() };
        assert!(mk("accuracy", 1.0).validate().is_ok());
        assert!(mk("r2", -3.0).validate().is_ok());
        assert!(matches!(mk("accuracy", -0.1).validate(), Err(MetricsError::OutOfRange { .. })));
        assert!(matches!(mk("mse", -1.0).validate(), Err(MetricsError::OutOfRange { .. })));
        assert!(matches!(mk("r2", 1.5).validate(), Err(MetricsError::OutOfRange { .. })));
        let empty = EvalMetrics { examples: 0, values: [("accuracy".to_owned(), 1.0)].into() };
        assert_eq!(empty.validate(), Err(MetricsError::Empty));
    }

    fn brute_force_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
        let (mut wins, mut pairs) = (0.0, 0.0);
        for (i, &si) in scores.iter().enumerate() {
            for (j, &sj) in scores.iter().enumerate() {
                if positive[i] && !positive[j] {
                    pairs += 1.0;
                    wins += if si > sj {
                        1.0
                    } else if si == sj {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        (pairs > 0.0).then(|| wins / pairs)
    }

    proptest! {
        #[test]
        fn auc_equals_the_pairwise_definition(rows in proptest::collection::vec((0u8..6, any::<bool>()), 0..40)) {
            // Few distinct scores, so ties are frequent.
            let scores: Vec<f64> = rows.iter().map(|(s, _)| f64::from(*s) / 5.0).collect();
            let positive: Vec<bool> = rows.iter().map(|(_, p)| *p).collect();
            let fast = auc(&scores, &positive);
            let slow = brute_force_auc(&scores, &positive);
            prop_assert_eq!(fast.is_some(), slow.is_some());
            if let (Some(f), Some(s)) = (fast, slow) {
                prop_assert!((f - s).abs() < 1e-12);
            }
        }

        #[test]
        fn classification_values_are_finite_and_in_range(
            raw in proptest::collection::vec(0.0f32..1.0, 3..60),
            labels_seed in proptest::collection::vec(0usize..3, 20),
        ) {
            let classes = 3;
            let n = raw.len() / classes;
            let probs = &raw[..n * classes];
            let labels: Vec<usize> = (0..n).map(|i| labels_seed[i % labels_seed.len()]).collect();
            let m = classification(probs, classes, &labels).unwrap();
            prop_assert!(m.validate().is_ok());
        }
    }
}

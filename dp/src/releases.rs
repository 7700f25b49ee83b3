//! Small differentially private releases a client makes besides its model: an example count, a label
//! histogram and per-column feature statistics, all through OpenDP 0.16 measurements.
//!
//! Every release is **pure ε-DP** (δ = 0) under the add/remove-one-record relation (OpenDP's
//! `SymmetricDistance` with `d_in = 1`), the same unit of privacy as DP-SGD. Each returns a [`Release`]: the
//! value and the ε it spent, exactly the ε the caller configured, for the caller's ledger. Internally every
//! OpenDP measurement is built so that its own privacy map at `d_in = 1` is ≤ the configured share of ε
//! (Laplace-family noise; OpenDP's discretized samplers resist floating-point attacks, Mironov 2012), and the
//! shares compose sequentially (Dwork and Roth 2014, Theorem 3.16).
//!
//! # Mechanisms
//! - [`noisy_count`]: discrete Laplace (`make_laplace` on `i64`) of a count, whose sensitivity is 1.
//! - [`label_histogram`]: `make_count_by_categories` (L1 sensitivity 1: one record moves one bin by one) then
//!   vector discrete Laplace.
//! - [`clipped_sums`]: per-record integer contributions clamped entry by entry to declared caps, summed, then
//!   vector discrete Laplace; the L1 sensitivity is the sum of the caps (the sum of clipped losses in
//!   Abadi et al. 2016 §3.1 is the same construction, one entry wide).
//! - [`feature_statistics`]: per column, the budget is split in four equal shares:
//!   1. counts of present and missing values: a 2-bin histogram of "is missing" (L1 sensitivity 1), giving the
//!      missing rate `missing / (present + missing)` as post-processing;
//!   2. the sum of the present values after clamping to the declared bounds (`make_drop_null >> make_clamp >>
//!      make_sum >> make_laplace`), giving the mean `sum / present` as post-processing;
//!   3. and 4. the "min" and "max" as private quantiles at `tail` and `1 − tail`
//!      (`make_private_quantile`: exponential mechanism over a grid of candidates spanning the declared bounds;
//!      Smith 2011, McKenna and Sheldon 2020).
//!
//!   Why quantiles and not the exact extremes: the true minimum of a column can move arbitrarily when one record
//!   is added, so no amount of noise added to it is DP without clamping, and after clamping a noisy extreme is
//!   dominated by the bound itself (sensitivity = the whole range). An extreme quantile is robust: one record
//!   changes each candidate's score by at most one, so the exponential mechanism releases it with pure ε-DP, and
//!   the result is a value below which (or above which) about `tail` of the records lie. Exactly `tail = 0`
//!   would not work either: every candidate at or below the minimum scores the same, so the release would be
//!   uniform between the lower bound and the minimum.
//!
//! Missing values are `None`; a `Some(NaN)` is treated as missing too. Non-missing values outside the declared
//! bounds are clamped to them (the bounds must be declared independently of the data to keep the guarantee).

use opendp::core::{Domain, Measurement, Metric, MetricSpace};
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::error::Fallible;
use opendp::measurements::{make_laplace, make_private_quantile};
use opendp::measures::MaxDivergence;
use opendp::metrics::{AbsoluteDistance, L1Distance, SymmetricDistance};
use opendp::transformations::{make_clamp, make_count_by_categories, make_drop_null, make_sum};

use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use rand_distr::{Distribution, Geometric};

use crate::accountant::Epsilon;

/// A bad parameter for a release, or a failure inside OpenDP.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// ε not finite and > 0.
    #[error("ε = {0} must be finite and > 0 for a release")]
    Epsilon(f64),
    /// Declared bounds not finite or not increasing.
    #[error("bounds [{lower}, {upper}] must be finite with lower < upper")]
    Bounds {
        /// Lower bound given.
        lower: f64,
        /// Upper bound given.
        upper: f64,
    },
    /// A quantile tail outside (0, 0.5).
    #[error("tail = {0} must be in (0, 0.5)")]
    Tail(f64),
    /// Fewer than two quantile candidates.
    #[error("{0} quantile candidates; at least 2 are needed")]
    Candidates(usize),
    /// A histogram with no classes.
    #[error("a label histogram needs at least one class")]
    NoClasses,
    /// A label not below the class count.
    #[error("label {label} is out of range for {classes} classes")]
    LabelOutOfRange {
        /// The label.
        label: usize,
        /// The class count.
        classes: usize,
    },
    /// A different number of columns and declared bounds.
    #[error("{columns} columns but {bounds} declared bounds")]
    ColumnMismatch {
        /// Columns given.
        columns: usize,
        /// Bounds given.
        bounds: usize,
    },
    /// A per-record contribution of another width than its caps.
    #[error("a contribution of {got} entries for {expected} caps")]
    Width {
        /// Entries expected (the number of caps).
        expected: usize,
        /// Entries given.
        got: usize,
    },
    /// Contribution caps that are empty, not positive, or whose sum overflows.
    #[error("contribution caps {0:?} must be positive, at least one, with a sum that fits in an i64")]
    Caps(Vec<i64>),
    /// A count too large for the noise arithmetic.
    #[error("count {0} is too large")]
    TooLarge(usize),
    /// OpenDP refused a construction or failed to sample.
    #[error("OpenDP: {0}")]
    OpenDp(String),
    /// No noise scale was found whose OpenDP privacy map fits the configured ε (should not happen).
    #[error("could not fit the noise scale to ε = {0}")]
    Calibration(f64),
}

impl From<opendp::error::Error> for ReleaseError {
    fn from(e: opendp::error::Error) -> Self {
        match e.message {
            Some(m) => Self::OpenDp(format!("{}: {m}", e.variant)),
            None => Self::OpenDp(e.variant.to_string()),
        }
    }
}

/// A DP release: the released value and the ε it spent (δ = 0, add/remove relation).
#[derive(Debug, Clone, PartialEq)]
pub struct Release<T> {
    /// The released value.
    pub value: T,
    /// The ε spent: exactly the ε configured by the caller (the mechanisms' own maps are at most this).
    pub epsilon: Epsilon,
    /// Stable name of the mechanism, for the ledger.
    pub mechanism: &'static str,
}

/// Declared clamping bounds of one feature column, fixed independently of the data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColumnBounds {
    lower: f64,
    upper: f64,
}

impl ColumnBounds {
    /// Bounds `[lower, upper]`.
    ///
    /// # Errors
    /// [`ReleaseError::Bounds`] unless both are finite and `lower < upper`.
    pub fn new(lower: f64, upper: f64) -> Result<Self, ReleaseError> {
        if lower.is_finite() && upper.is_finite() && lower < upper {
            Ok(Self { lower, upper })
        } else {
            Err(ReleaseError::Bounds { lower, upper })
        }
    }

    /// Lower bound.
    #[must_use]
    pub fn lower(&self) -> f64 {
        self.lower
    }

    /// Upper bound.
    #[must_use]
    pub fn upper(&self) -> f64 {
        self.upper
    }
}

/// Options of [`feature_statistics`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatsOptions {
    /// Fraction of records below the released "min" (and above the released "max"); in (0, 0.5).
    /// Default 0.01.
    pub tail: f64,
    /// Number of evenly spaced quantile candidates spanning each column's bounds (the resolution of min and
    /// max). Default 1001.
    pub candidates: usize,
}

impl Default for StatsOptions {
    fn default() -> Self {
        Self { tail: 0.01, candidates: 1001 }
    }
}

/// DP statistics of one feature column.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ColumnStats {
    /// Mean of the present values after clamping; `None` if the noisy count of present values is below 1.
    pub mean: Option<f64>,
    /// The `tail`-quantile of the present values (a robust minimum), one of the candidates.
    pub min: f64,
    /// The `(1 − tail)`-quantile of the present values (a robust maximum), one of the candidates.
    pub max: f64,
    /// Fraction of missing values; `None` if the noisy total is below 1.
    pub missing_rate: Option<f64>,
    /// Noisy number of present values (clamped at 0).
    pub present: f64,
    /// Noisy number of missing values (clamped at 0).
    pub missing: f64,
}

fn check_epsilon(epsilon: Epsilon) -> Result<f64, ReleaseError> {
    let e = epsilon.get();
    if e > 0.0 && e.is_finite() { Ok(e) } else { Err(ReleaseError::Epsilon(e)) }
}

/// A calibrated measurement and the noise scale it was built with.
type Fitted<DI, MI, TO> = (f64, Measurement<DI, MI, MaxDivergence, TO>);

/// Builds the measurement with the smallest noise scale (to ~1e-9 relative) whose OpenDP privacy map at
/// `d_in` is ≤ `epsilon`. ε of these measurements is inversely proportional to the scale, up to the
/// rounding OpenDP adds conservatively, so a probe at scale 1 gives the scale and a few retries absorb rounding.
fn fit_scale<DI, MI, TO>(
    epsilon: f64,
    d_in: &MI::Distance,
    build: impl Fn(f64) -> Fallible<Measurement<DI, MI, MaxDivergence, TO>>,
) -> Result<Fitted<DI, MI, TO>, ReleaseError>
where
    DI: Domain,
    MI: Metric,
    (DI, MI): MetricSpace,
{
    let probe = build(1.0)?.map(d_in)?;
    if !(probe > 0.0 && probe.is_finite()) {
        return Err(ReleaseError::Calibration(epsilon));
    }
    let mut scale = probe / epsilon;
    for _ in 0..16 {
        let m = build(scale)?;
        let spent = m.map(d_in)?;
        if spent <= epsilon {
            return Ok((scale, m));
        }
        scale *= (spent / epsilon) * (1.0 + 1e-9);
    }
    Err(ReleaseError::Calibration(epsilon))
}

/// Where the noise of a count or histogram release comes from.
///
/// [`ReleaseNoise::OpenDp`] is the only private choice: OpenDP's discrete Laplace sampler, drawing from the
/// operating system's CSPRNG. [`ReleaseNoise::insecure_seeded`] exists so that a simulation (`cohort demo
/// --insecure-seed`) can be replayed bit for bit; it draws the same distribution at the same scale from a seeded
/// ChaCha12 stream, and gives **no privacy**.
#[derive(Debug, Clone, Default)]
pub enum ReleaseNoise {
    /// OpenDP's samplers, OS-seeded (every deployment).
    #[default]
    OpenDp,
    /// INSECURE: discrete Laplace from a seeded stream, as the difference of two geometric variables
    /// (Inusah and Kozubowski 2006); reproducible, and no privacy.
    InsecureSeeded(Box<ChaCha12Rng>),
}

impl ReleaseNoise {
    /// INSECURE: reproducible release noise from `seed`, for simulation only. Gives **no privacy**.
    pub fn insecure_seeded(seed: u64) -> Self {
        // A domain-separated stream, distinct from the DP-SGD generators seeded with the same number.
        Self::InsecureSeeded(Box::new(ChaCha12Rng::seed_from_u64(seed ^ 0x7265_6c65_6173_6573)))
    }

    /// Whether the noise was seeded by hand.
    pub fn is_insecure(&self) -> bool {
        matches!(self, Self::InsecureSeeded(_))
    }

    /// `exact` plus discrete Laplace noise of `scale` on every entry: OpenDP's measurement `m` when private,
    /// the seeded stream otherwise.
    fn apply<TI, TO>(
        &mut self,
        scale: f64,
        m: &Measurement<TI, impl Metric, MaxDivergence, TO>,
        input: &TI::Carrier,
        exact: impl FnOnce(&TI::Carrier) -> TO,
        mut perturb: impl FnMut(&mut TO, &mut dyn FnMut() -> i64),
    ) -> Result<TO, ReleaseError>
    where
        TI: Domain,
    {
        match self {
            Self::OpenDp => Ok(m.invoke(input)?),
            Self::InsecureSeeded(rng) => {
                // P(k) ∝ exp(−|k|/scale): the difference of two i.i.d. Geometric(1 − e^{−1/scale}) counts.
                let geometric = Geometric::new(-(-1.0 / scale).exp_m1())
                    .map_err(|e| ReleaseError::OpenDp(format!("seeded discrete Laplace: {e}")))?;
                let mut draw = || geometric.sample(rng.as_mut()) as i64 - geometric.sample(rng.as_mut()) as i64;
                let mut out = exact(input);
                perturb(&mut out, &mut draw);
                Ok(out)
            }
        }
    }
}

/// A DP count of records: `n` plus discrete Laplace noise of scale 1/ε (the count's sensitivity is 1).
///
/// # Errors
/// [`ReleaseError::Epsilon`] for ε not finite and > 0; [`ReleaseError::TooLarge`] above `i64::MAX`;
/// [`ReleaseError::OpenDp`] if sampling fails.
///
/// # Example
/// ```
/// use cohort_dp::{accountant::Epsilon, releases::{noisy_count, ReleaseNoise}};
/// let r = noisy_count(10_000, Epsilon::new(1.0).unwrap(), &mut ReleaseNoise::OpenDp).unwrap();
/// assert_eq!(r.epsilon.get(), 1.0);
/// assert!((r.value - 10_000).abs() < 100); // fails with probability ~e^-100
/// ```
pub fn noisy_count(n: usize, epsilon: Epsilon, noise: &mut ReleaseNoise) -> Result<Release<i64>, ReleaseError> {
    let e = check_epsilon(epsilon)?;
    let count = i64::try_from(n).map_err(|_| ReleaseError::TooLarge(n))?;
    // d_in = 1 on the count: adding or removing one record changes it by one.
    let (scale, m) = fit_scale(e, &1i64, |scale| {
        make_laplace::<_, _, MaxDivergence>(
            AtomDomain::<i64>::new_non_nan(),
            AbsoluteDistance::<i64>::default(),
            scale,
            None,
        )
    })?;
    let value = noise.apply(scale, &m, &count, |c| *c, |c, draw| *c = c.saturating_add(draw()))?;
    Ok(Release { value, epsilon, mechanism: "count/discrete-laplace" })
}

/// A DP histogram of `labels` over classes `0..classes`: per-class counts plus independent discrete Laplace
/// noise of scale 1/ε. Counts may come out negative; clamping them is free post-processing for the caller.
///
/// # Errors
/// [`ReleaseError::Epsilon`], [`ReleaseError::NoClasses`], [`ReleaseError::LabelOutOfRange`] (checked before
/// anything is released), [`ReleaseError::OpenDp`].
///
/// # Example
/// ```
/// use cohort_dp::{accountant::Epsilon, releases::{label_histogram, ReleaseNoise}};
/// let labels: Vec<usize> = (0..3000).map(|i| i % 3).collect();
/// let r = label_histogram(&labels, 3, Epsilon::new(2.0).unwrap(), &mut ReleaseNoise::OpenDp).unwrap();
/// assert_eq!(r.value.len(), 3);
/// assert!(r.value.iter().all(|c| (c - 1000).abs() < 100));
/// ```
pub fn label_histogram(
    labels: &[usize],
    classes: usize,
    epsilon: Epsilon,
    noise: &mut ReleaseNoise,
) -> Result<Release<Vec<i64>>, ReleaseError> {
    let e = check_epsilon(epsilon)?;
    if classes == 0 {
        return Err(ReleaseError::NoClasses);
    }
    if let Some(&label) = labels.iter().find(|&&l| l >= classes) {
        return Err(ReleaseError::LabelOutOfRange { label, classes });
    }
    let (scale, m) = fit_scale(e, &1u32, |scale| {
        let t = make_count_by_categories::<L1Distance<i64>, usize, i64>(
            VectorDomain::new(AtomDomain::default()),
            SymmetricDistance,
            (0..classes).collect(),
            false,
        )?;
        t >> make_laplace::<_, _, MaxDivergence>(
            VectorDomain::new(AtomDomain::new_non_nan()),
            L1Distance::default(),
            scale,
            None,
        )?
    })?;
    let exact = |labels: &Vec<usize>| {
        let mut counts = vec![0i64; classes];
        for &l in labels {
            counts[l] += 1;
        }
        counts
    };
    let perturb = |counts: &mut Vec<i64>, draw: &mut dyn FnMut() -> i64| {
        for c in counts.iter_mut() {
            *c = c.saturating_add(draw());
        }
    };
    let mut counts = noise.apply(scale, &m, &labels.to_vec(), exact, perturb)?;
    counts.truncate(classes);
    Ok(Release { value: counts, epsilon, mechanism: "histogram/discrete-laplace" })
}

/// DP sums of per-record contributions: entry `k` of every record's contribution is clamped to
/// `[-caps[k], caps[k]]`, the clamped entries are summed over the records, and independent discrete Laplace
/// noise of scale S/ε is added to every sum, where S = Σ caps. Adding or removing one record moves the vector of
/// sums by at most S in L1, so this is ε-DP under add/remove whatever the caller passes (the clamping happens
/// here, not in the caller). Sums may come out negative; bounding them again is post-processing.
///
/// Fractions are released on a fixed-point grid: scale them to integers first (the caps are in the same units).
///
/// # Errors
/// [`ReleaseError::Epsilon`], [`ReleaseError::Caps`], [`ReleaseError::Width`] (all checked before anything is
/// released), [`ReleaseError::OpenDp`].
///
/// # Example
/// ```
/// use cohort_dp::{accountant::Epsilon, releases::{clipped_sums, ReleaseNoise}};
/// // A count and a sum of values in [0, 10]; the outlier is clipped to 10.
/// let rows: Vec<Vec<i64>> = (0..1000).map(|i| vec![1, i % 5]).chain([vec![1, 1_000_000]]).collect();
/// let r = clipped_sums(&rows, &[1, 10], Epsilon::new(5.0).unwrap(), &mut ReleaseNoise::OpenDp).unwrap();
/// assert!((r.value[0] - 1001).abs() < 50);
/// assert!((r.value[1] - 2010).abs() < 50);
/// ```
pub fn clipped_sums(
    contributions: &[Vec<i64>],
    caps: &[i64],
    epsilon: Epsilon,
    noise: &mut ReleaseNoise,
) -> Result<Release<Vec<i64>>, ReleaseError> {
    let e = check_epsilon(epsilon)?;
    let sensitivity = caps
        .iter()
        .try_fold(0i64, |s, &c| if c > 0 { s.checked_add(c) } else { None })
        .filter(|&s| s > 0)
        .ok_or_else(|| ReleaseError::Caps(caps.to_vec()))?;
    if let Some(row) = contributions.iter().find(|row| row.len() != caps.len()) {
        return Err(ReleaseError::Width { expected: caps.len(), got: row.len() });
    }
    let mut sums = vec![0i64; caps.len()];
    for row in contributions {
        for ((sum, &v), &cap) in sums.iter_mut().zip(row).zip(caps) {
            *sum = sum.saturating_add(v.clamp(-cap, cap));
        }
    }
    let (scale, m) = fit_scale(e, &sensitivity, |scale| {
        make_laplace::<_, _, MaxDivergence>(
            VectorDomain::new(AtomDomain::<i64>::new_non_nan()),
            L1Distance::<i64>::default(),
            scale,
            None,
        )
    })?;
    let perturb = |sums: &mut Vec<i64>, draw: &mut dyn FnMut() -> i64| {
        for s in sums.iter_mut() {
            *s = s.saturating_add(draw());
        }
    };
    let value = noise.apply(scale, &m, &sums, Vec::clone, perturb)?;
    Ok(Release { value, epsilon, mechanism: "clipped-sums/discrete-laplace" })
}

/// DP statistics (mean, robust min and max, missing rate) of each column, under one total budget `epsilon`
/// split evenly over the columns and, within a column, over four measurements (see the [module docs](self)).
/// A record contributes one value (or a missing value) to each column; columns may differ in length.
///
/// # Errors
/// [`ReleaseError::Epsilon`], [`ReleaseError::ColumnMismatch`], [`ReleaseError::Tail`],
/// [`ReleaseError::Candidates`] (all checked before anything is released), [`ReleaseError::OpenDp`].
///
/// # Example
/// ```
/// use cohort_dp::{accountant::Epsilon, releases::*};
/// let ages: Vec<Option<f64>> = (0..5000).map(|i| if i % 10 == 0 { None } else { Some(f64::from(i % 80)) }).collect();
/// let bounds = [ColumnBounds::new(0.0, 100.0).unwrap()];
/// let r = feature_statistics(&[ages], &bounds, Epsilon::new(4.0).unwrap(), StatsOptions::default()).unwrap();
/// assert_eq!(r.epsilon.get(), 4.0);
/// let s = r.value[0];
/// assert!((s.mean.unwrap() - 39.5).abs() < 2.0);
/// assert!((s.missing_rate.unwrap() - 0.1).abs() < 0.02);
/// ```
pub fn feature_statistics(
    columns: &[Vec<Option<f64>>],
    bounds: &[ColumnBounds],
    epsilon: Epsilon,
    options: StatsOptions,
) -> Result<Release<Vec<ColumnStats>>, ReleaseError> {
    let e = check_epsilon(epsilon)?;
    if columns.len() != bounds.len() {
        return Err(ReleaseError::ColumnMismatch { columns: columns.len(), bounds: bounds.len() });
    }
    if !(options.tail > 0.0 && options.tail < 0.5) {
        return Err(ReleaseError::Tail(options.tail));
    }
    if options.candidates < 2 {
        return Err(ReleaseError::Candidates(options.candidates));
    }
    if columns.is_empty() {
        return Ok(Release { value: Vec::new(), epsilon, mechanism: FEATURE_STATS });
    }
    // Four shares per column; round the share down until the shares sum to at most ε.
    let parts = 4.0 * columns.len() as f64;
    let mut share = e / parts;
    while share * parts > e {
        share = share.next_down();
    }
    if share.is_nan() || share <= 0.0 {
        return Err(ReleaseError::Epsilon(e));
    }
    let value = columns
        .iter()
        .zip(bounds)
        .map(|(c, b)| column_statistics(c, *b, share, options))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Release { value, epsilon, mechanism: FEATURE_STATS })
}

const FEATURE_STATS: &str = "feature-stats/laplace+quantile";

/// Statistics of one column, spending `share` four times.
fn column_statistics(
    column: &[Option<f64>],
    b: ColumnBounds,
    share: f64,
    options: StatsOptions,
) -> Result<ColumnStats, ReleaseError> {
    // NaN marks missing for OpenDP's `make_drop_null`; `Some(NaN)` is missing as well.
    let data: Vec<f64> = column.iter().map(|v| v.unwrap_or(f64::NAN)).collect();
    let is_missing: Vec<bool> = data.iter().map(|v| v.is_nan()).collect();

    // 1. Present / missing counts (row-wise map then a 2-bin histogram: L1 sensitivity 1).
    let (_, m_counts) = fit_scale(share, &1u32, |scale| {
        let t = make_count_by_categories::<L1Distance<i64>, bool, i64>(
            VectorDomain::new(AtomDomain::default()),
            SymmetricDistance,
            vec![false, true],
            false,
        )?;
        t >> make_laplace::<_, _, MaxDivergence>(
            VectorDomain::new(AtomDomain::new_non_nan()),
            L1Distance::default(),
            scale,
            None,
        )?
    })?;
    let counts = m_counts.invoke(&is_missing)?;
    let present = counts.first().copied().unwrap_or(0).max(0) as f64;
    let missing = counts.get(1).copied().unwrap_or(0).max(0) as f64;

    // Present values, clamped to the declared bounds: drop_null and clamp are both 1-stable.
    let clamped = || -> Fallible<_> {
        make_drop_null(VectorDomain::new(AtomDomain::<f64>::default()), SymmetricDistance)?
            >> make_clamp(VectorDomain::new(AtomDomain::new_non_nan()), SymmetricDistance, (b.lower, b.upper))?
    };

    // 2. Sum of clamped values (sensitivity max(|L|, |U|) plus OpenDP's float-rounding allowance).
    let (_, m_sum) = fit_scale(share, &1u32, |scale| {
        let t = clamped()?;
        let t = (t.clone() >> make_sum(t.output_domain.clone(), SymmetricDistance)?)?;
        let noise = make_laplace::<_, _, MaxDivergence>(t.output_domain.clone(), t.output_metric.clone(), scale, None)?;
        t >> noise
    })?;
    let sum = m_sum.invoke(&data)?;
    let mean = (present >= 1.0).then(|| (sum / present).clamp(b.lower, b.upper));

    // 3. and 4. Robust extremes: private quantiles over an evenly spaced candidate grid within the bounds.
    let n = options.candidates;
    let step = (b.upper - b.lower) / (n - 1) as f64;
    let mut candidates: Vec<f64> = (0..n).map(|i| b.lower + step * i as f64).collect();
    if let Some(last) = candidates.last_mut() {
        *last = b.upper;
    }
    candidates.dedup();
    let quantile = |alpha: f64| -> Result<f64, ReleaseError> {
        let (_, m) = fit_scale(share, &1u32, |scale| {
            let t = clamped()?;
            let q = make_private_quantile(
                t.output_domain.clone(),
                SymmetricDistance,
                MaxDivergence,
                candidates.clone(),
                alpha,
                scale,
            )?;
            t >> q
        })?;
        Ok(m.invoke(&data)?)
    };
    let min = quantile(options.tail)?;
    let max = quantile(1.0 - options.tail)?;

    let total = present + missing;
    let missing_rate = (total >= 1.0).then(|| (missing / total).clamp(0.0, 1.0));
    Ok(ColumnStats { mean, min, max, missing_rate, present, missing })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(e: f64) -> Epsilon {
        Epsilon::new(e).unwrap()
    }

    /// Clipped sums clamp every entry to its cap, whatever the caller passes, and add noise at the scale of the
    /// caps' sum: the spread of repeated releases grows with the caps, not with the values.
    #[test]
    fn clipped_sums_clamp_every_entry_and_scale_the_noise_with_the_caps() {
        let rows: Vec<Vec<i64>> = (0..2000).map(|i| vec![1, if i % 2 == 0 { 7 } else { -1_000_000 }]).collect();
        let r = clipped_sums(&rows, &[1, 3], eps(20.0), &mut ReleaseNoise::OpenDp).unwrap();
        // Exact: 2000 and 1000·3 − 1000·3 = 0.
        assert!((r.value[0] - 2000).abs() < 10, "{:?}", r.value);
        assert!(r.value[1].abs() < 10, "{:?}", r.value);
        assert_eq!(r.mechanism, "clipped-sums/discrete-laplace");
        let spread = |caps: &[i64]| {
            let draws: Vec<f64> = (0..400)
                .map(|_| clipped_sums(&[], caps, eps(1.0), &mut ReleaseNoise::OpenDp).unwrap().value[0] as f64)
                .collect();
            (draws.iter().map(|d| d * d).sum::<f64>() / draws.len() as f64).sqrt()
        };
        // Discrete Laplace of scale b has a standard deviation near √2·b: b = 2 and b = 200.
        let (narrow, wide) = (spread(&[1, 1]), spread(&[100, 100]));
        assert!((1.5..5.0).contains(&narrow), "{narrow}");
        assert!((200.0..400.0).contains(&wide), "{wide}");
    }

    #[test]
    fn clipped_sums_refuse_bad_caps_and_widths_before_releasing() {
        let noise = &mut ReleaseNoise::OpenDp;
        assert_eq!(clipped_sums(&[], &[], eps(1.0), noise).unwrap_err(), ReleaseError::Caps(vec![]));
        assert_eq!(clipped_sums(&[], &[1, 0], eps(1.0), noise).unwrap_err(), ReleaseError::Caps(vec![1, 0]));
        assert!(matches!(clipped_sums(&[], &[i64::MAX, 1], eps(1.0), noise), Err(ReleaseError::Caps(_))));
        assert_eq!(
            clipped_sums(&[vec![1]], &[1, 1], eps(1.0), noise).unwrap_err(),
            ReleaseError::Width { expected: 2, got: 1 }
        );
    }

    /// The seeded stream gives the same releases from the same seed (and is labelled insecure).
    #[test]
    fn seeded_clipped_sums_replay() {
        let rows = vec![vec![1, 2], vec![1, -2]];
        let a = clipped_sums(&rows, &[1, 2], eps(1.0), &mut ReleaseNoise::insecure_seeded(3)).unwrap();
        let b = clipped_sums(&rows, &[1, 2], eps(1.0), &mut ReleaseNoise::insecure_seeded(3)).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn noisy_count_is_close_and_reports_epsilon() {
        let r = noisy_count(100_000, eps(10.0), &mut ReleaseNoise::OpenDp).unwrap();
        println!("noisy count of 100000 at ε=10: {}", r.value);
        assert!((r.value - 100_000).abs() <= 5);
        assert_eq!(r.epsilon.get(), 10.0);
        assert_eq!(r.mechanism, "count/discrete-laplace");
        // Noise is really added at small ε: repeated releases are not all equal.
        let draws: Vec<i64> =
            (0..20).map(|_| noisy_count(1000, eps(0.5), &mut ReleaseNoise::OpenDp).unwrap().value).collect();
        assert!(draws.iter().any(|&d| d != draws[0]));
    }

    #[test]
    fn label_histogram_is_close() {
        let labels: Vec<usize> = (0..10_000).map(|i| if i % 10 == 0 { 2 } else { i % 2 }).collect();
        let truth = [4000i64, 5000, 1000, 0]; // multiples of 10 → 2; other evens → 0; odds → 1
        let r = label_histogram(&labels, 4, eps(10.0), &mut ReleaseNoise::OpenDp).unwrap();
        println!("label histogram at ε=10: {:?} (truth {truth:?})", r.value);
        assert_eq!(r.value.len(), 4);
        for (got, want) in r.value.iter().zip(truth) {
            assert!((got - want).abs() <= 5, "{got} vs {want}");
        }
        assert_eq!(r.epsilon.get(), 10.0);
    }

    #[test]
    fn feature_statistics_are_close() {
        // Column 0: values 0..10 uniform, 20% missing. Column 1: constant 3.0 plus values out of bounds.
        let c0: Vec<Option<f64>> =
            (0..20_000).map(|i| if i % 5 == 0 { None } else { Some(f64::from(i % 1000) / 100.0) }).collect();
        let c1: Vec<Option<f64>> = (0..20_000).map(|i| if i % 2 == 0 { Some(3.0) } else { Some(1e9) }).collect();
        let bounds = [ColumnBounds::new(0.0, 10.0).unwrap(), ColumnBounds::new(-5.0, 5.0).unwrap()];
        let r = feature_statistics(&[c0, c1], &bounds, eps(16.0), StatsOptions::default()).unwrap();
        println!("feature stats at ε=16: {:?}", r.value);
        assert_eq!(r.epsilon.get(), 16.0);
        let (s0, s1) = (r.value[0], r.value[1]);
        assert!((s0.mean.unwrap() - 4.995).abs() < 0.01, "{s0:?}");
        assert!((s0.missing_rate.unwrap() - 0.2).abs() < 0.002, "{s0:?}");
        assert!((s0.present - 16_000.0).abs() < 10.0 && (s0.missing - 4000.0).abs() < 10.0);
        // 1% and 99% quantiles of a uniform [0, 10) column.
        assert!((s0.min - 0.1).abs() < 0.1 && (s0.max - 9.9).abs() < 0.1, "{s0:?}");
        // Out-of-bounds values are clamped to 5: mean of half 3.0, half 5.0.
        assert!((s1.mean.unwrap() - 4.0).abs() < 0.01, "{s1:?}");
        assert_eq!(s1.missing_rate.unwrap(), 0.0_f64.max(s1.missing_rate.unwrap()));
        assert!(s1.missing_rate.unwrap() < 0.001);
        assert!((s1.min - 3.0).abs() < 0.05 && (s1.max - 5.0).abs() < 0.05, "{s1:?}");
    }

    #[test]
    fn all_missing_column_has_no_mean() {
        let c = vec![None; 1000];
        let r = feature_statistics(&[c], &[ColumnBounds::new(0.0, 1.0).unwrap()], eps(40.0), StatsOptions::default())
            .unwrap();
        let s = r.value[0];
        assert!(s.mean.is_none() && s.present < 1.0, "{s:?}");
        assert!((s.missing_rate.unwrap() - 1.0).abs() < 1e-3);
    }

    #[test]
    fn bad_parameters_are_typed_errors() {
        assert!(matches!(noisy_count(10, Epsilon::ZERO, &mut ReleaseNoise::OpenDp), Err(ReleaseError::Epsilon(_))));
        assert!(matches!(noisy_count(10, Epsilon::INFINITY, &mut ReleaseNoise::OpenDp), Err(ReleaseError::Epsilon(_))));
        assert!(matches!(
            label_histogram(&[0, 1], 0, eps(1.0), &mut ReleaseNoise::OpenDp),
            Err(ReleaseError::NoClasses)
        ));
        assert!(matches!(
            label_histogram(&[0, 5], 3, eps(1.0), &mut ReleaseNoise::OpenDp),
            Err(ReleaseError::LabelOutOfRange { label: 5, classes: 3 })
        ));
        assert!(matches!(ColumnBounds::new(1.0, 1.0), Err(ReleaseError::Bounds { .. })));
        assert!(matches!(ColumnBounds::new(f64::NAN, 1.0), Err(ReleaseError::Bounds { .. })));
        assert!(matches!(ColumnBounds::new(0.0, f64::INFINITY), Err(ReleaseError::Bounds { .. })));
        let b = ColumnBounds::new(0.0, 1.0).unwrap();
        let col = vec![vec![Some(0.5)]];
        assert!(matches!(
            feature_statistics(&col, &[], eps(1.0), StatsOptions::default()),
            Err(ReleaseError::ColumnMismatch { .. })
        ));
        for tail in [0.0, 0.5, f64::NAN] {
            let o = StatsOptions { tail, ..StatsOptions::default() };
            assert!(matches!(feature_statistics(&col, &[b], eps(1.0), o), Err(ReleaseError::Tail(_))));
        }
        let o = StatsOptions { candidates: 1, ..StatsOptions::default() };
        assert!(matches!(feature_statistics(&col, &[b], eps(1.0), o), Err(ReleaseError::Candidates(1))));
        assert!(feature_statistics(&[], &[], eps(1.0), StatsOptions::default()).unwrap().value.is_empty());
    }

    #[test]
    fn opendp_maps_fit_within_configured_epsilon() {
        // The measurement fitted for a share never exceeds it, per OpenDP's own privacy map.
        for e in [0.1, 1.0, 3.7] {
            let (_, m) = fit_scale(e, &1u32, |scale| {
                let t = make_drop_null(VectorDomain::new(AtomDomain::<f64>::default()), SymmetricDistance)?
                    >> make_clamp(VectorDomain::new(AtomDomain::new_non_nan()), SymmetricDistance, (-3.0, 7.0))?;
                let t = t?;
                let t = (t.clone() >> make_sum(t.output_domain.clone(), SymmetricDistance)?)?;
                let noise =
                    make_laplace::<_, _, MaxDivergence>(t.output_domain.clone(), t.output_metric.clone(), scale, None)?;
                t >> noise
            })
            .unwrap();
            let spent = m.map(&1).unwrap();
            assert!(spent <= e && spent > e * (1.0 - 1e-6), "{spent} vs {e}");
        }
    }

    #[test]
    fn seeded_release_noise_replays_and_has_the_discrete_laplace_variance() {
        let labels: Vec<usize> = (0..900).map(|i| i % 3).collect();
        let run = |seed| {
            let mut noise = ReleaseNoise::insecure_seeded(seed);
            assert!(noise.is_insecure());
            let count = noisy_count(1000, eps(0.5), &mut noise).unwrap().value;
            (count, label_histogram(&labels, 3, eps(0.5), &mut noise).unwrap().value)
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert!(!ReleaseNoise::OpenDp.is_insecure());
        // Scale 1/ε = 2 (OpenDP's calibration at d_in = 1): Var = 2p/(1−p)² with p = e^{−1/2}, about 7.92.
        let mut noise = ReleaseNoise::insecure_seeded(1);
        let draws: Vec<f64> =
            (0..20_000).map(|_| (noisy_count(1000, eps(0.5), &mut noise).unwrap().value - 1000) as f64).collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (draws.len() - 1) as f64;
        let p = (-0.5f64).exp();
        let want = 2.0 * p / (1.0 - p).powi(2);
        assert!(mean.abs() < 0.1, "mean {mean}");
        assert!((var / want - 1.0).abs() < 0.05, "variance {var} vs {want}");
    }
}

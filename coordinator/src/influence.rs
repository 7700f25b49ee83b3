//! Bounded influence: the weights one round pools updates and evaluation reports with, and the bound on an
//! update's norm.
//!
//! A node's join count is a DP release the coordinator cannot check, so it is only ever used through
//! [`Influence::weights`]: clamped to `[1, max_weight]`, then capped at one common level so that no node holds
//! more than `max_share` of the total (water-filling, the cap that changes the fewest weights). With
//! `weighting = "uniform"` every node weighs 1. One node can therefore move a pooled figure — the mean update or
//! the gate's metric — by at most its share times the figure's range, whatever it claims.

use cohort_core::NodeName;
use cohort_core::config::{InfluenceSection, Weighting};
use std::collections::BTreeMap;

/// The weights of one pooling.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    /// The common cap every weight is at most (examples; 1 under uniform weighting).
    pub cap: f64,
    /// Each pooled node's weight, in `[1, cap]` (exactly 1 under uniform weighting).
    pub by_node: BTreeMap<NodeName, f64>,
}

impl Weights {
    /// The weight of `node` (1 for a node outside the pooling, which never happens for a pooled node).
    pub fn of(&self, node: &NodeName) -> f64 {
        self.by_node.get(node).copied().unwrap_or(1.0)
    }

    /// The largest weight.
    pub fn max(&self) -> f64 {
        self.by_node.values().copied().fold(1.0, f64::max)
    }
}

/// The influence bounds of a federation (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Influence {
    section: InfluenceSection,
}

/// An update whose L2 norm exceeds the federation's bound.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("the update's L2 norm {norm:.6} exceeds the federation's bound {bound}")]
pub struct TooLarge {
    /// The update's norm (infinite or NaN for a non-finite update).
    pub norm: f64,
    /// The bound.
    pub bound: f64,
}

/// Relative slack on the norm bound, for a client's f32 rounding after it clipped in f64.
const NORM_SLACK: f64 = 1e-5;

impl Influence {
    /// The bounds of `section` (validated by the config).
    pub fn new(section: InfluenceSection) -> Self {
        Self { section }
    }

    /// The weights of pooling `nodes`, whose released join counts are `counts` (a node without one counts 1).
    pub fn weights<'a>(
        &self,
        nodes: impl IntoIterator<Item = &'a NodeName>,
        counts: &BTreeMap<NodeName, f64>,
    ) -> Weights {
        let s = &self.section;
        let claimed: BTreeMap<NodeName, f64> = nodes
            .into_iter()
            .map(|n| {
                let count = match s.weighting {
                    Weighting::Uniform => 1.0,
                    Weighting::Examples => {
                        counts.get(n).copied().filter(|c| c.is_finite()).unwrap_or(1.0).clamp(1.0, s.max_weight)
                    }
                };
                (n.clone(), count)
            })
            .collect();
        let cap = share_cap(claimed.values().copied().collect(), s.max_share);
        let by_node = claimed.into_iter().map(|(n, c)| (n, c.min(cap))).collect();
        Weights { cap, by_node }
    }

    /// Checks that `delta`'s L2 norm is within `max_update_norm` (with a relative slack of 1e-5 for rounding).
    ///
    /// # Errors
    /// [`TooLarge`] with the norm, for a larger or non-finite update.
    pub fn check_update(&self, delta: &[f32]) -> Result<(), TooLarge> {
        let bound = self.section.max_update_norm;
        let norm = cohort_model::layout::l2_norm(delta);
        if norm.is_finite() && norm <= bound * (1.0 + NORM_SLACK) { Ok(()) } else { Err(TooLarge { norm, bound }) }
    }
}

/// The water level `L` such that capping every count at `L` leaves no count above `max_share` of the capped
/// total, and no lower cap than needed: the largest such `L`. Where no cap can meet the share (fewer than
/// `1 / max_share` counts), the smallest count, which makes every weight equal. Counts must be positive and
/// finite; an empty list gives infinity.
pub fn share_cap(mut counts: Vec<f64>, max_share: f64) -> f64 {
    counts.sort_by(|a, b| b.total_cmp(a));
    let Some(&smallest) = counts.last() else {
        return f64::INFINITY;
    };
    // rest[k] = the sum of counts[k..], the part a cap at a level between counts[k] and counts[k - 1] leaves alone.
    let mut rest = vec![0.0; counts.len() + 1];
    for k in (0..counts.len()).rev() {
        rest[k] = rest[k + 1] + counts[k];
    }
    if counts[0] <= max_share * rest[0] {
        return counts[0];
    }
    for k in 1..counts.len() {
        let capped = k as f64;
        // The largest share with the top k capped at counts[k] is counts[k] / (k·counts[k] + rest[k]).
        if counts[k] <= max_share * (capped * counts[k] + rest[k]) {
            // The level lies in [counts[k], counts[k - 1]]: L = s·(k·L + rest[k]).
            return (max_share * rest[k] / (1.0 - max_share * capped)).clamp(counts[k], counts[k - 1]);
        }
    }
    smallest
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn influence(weighting: Weighting, max_weight: f64, max_share: f64) -> Influence {
        Influence::new(InfluenceSection { weighting, max_weight, max_share, ..InfluenceSection::default() })
    }

    fn names(n: usize) -> Vec<NodeName> {
        (0..n).map(|i| NodeName(format!("h{i}"))).collect()
    }

    #[test]
    fn a_huge_claim_is_capped_to_the_share_bound() {
        let nodes = names(3);
        let counts: BTreeMap<NodeName, f64> = nodes.iter().cloned().zip([2f64.powi(63), 150.0, 190.0]).collect();
        let w = influence(Weighting::Examples, 1e5, 0.5).weights(&nodes, &counts);
        // The two honest counts are left alone and the claim is cut to their sum: a share of exactly 1/2.
        assert_eq!(w.of(&nodes[1]), 150.0);
        assert_eq!(w.of(&nodes[2]), 190.0);
        assert!((w.of(&nodes[0]) - 340.0).abs() < 1e-9, "{w:?}");
        let unbounded = influence(Weighting::Examples, f64::MAX, 1.0).weights(&nodes, &counts);
        assert!(unbounded.of(&nodes[0]) > 1e18, "without bounds the claim stands");
    }

    #[test]
    fn uniform_weights_ignore_the_counts_and_missing_counts_weigh_one() {
        let nodes = names(2);
        let counts: BTreeMap<NodeName, f64> = [(nodes[0].clone(), 1e6)].into();
        let w = influence(Weighting::Uniform, 1e5, 0.5).weights(&nodes, &counts);
        assert_eq!((w.cap, w.of(&nodes[0]), w.of(&nodes[1])), (1.0, 1.0, 1.0));
        let w = influence(Weighting::Examples, 1e5, 1.0).weights(&nodes, &counts);
        assert_eq!((w.of(&nodes[0]), w.of(&nodes[1])), (1e5, 1.0));
    }

    #[test]
    fn an_infeasible_share_gives_equal_weights() {
        assert_eq!(share_cap(vec![10.0, 1.0], 0.3), 1.0);
        assert_eq!(share_cap(vec![5.0, 5.0, 5.0], 0.34), 5.0);
        assert_eq!(share_cap(Vec::new(), 0.5), f64::INFINITY);
    }

    #[test]
    fn updates_beyond_the_norm_bound_are_refused() {
        let i = Influence::new(InfluenceSection { max_update_norm: 5.0, ..InfluenceSection::default() });
        assert!(i.check_update(&[3.0, 4.0]).is_ok());
        let err = i.check_update(&[3.0, 4.1]).unwrap_err();
        assert!(err.norm > 5.0 && err.bound == 5.0);
        assert!(i.check_update(&[f32::NAN]).is_err());
        assert!(i.check_update(&[f32::INFINITY]).is_err());
        let off = Influence::new(InfluenceSection { max_update_norm: f64::INFINITY, ..InfluenceSection::default() });
        assert!(off.check_update(&[1e30, 1e30]).is_ok());
    }

    proptest! {
        /// The cap meets the share whenever it can, is the largest level that does, and never raises a weight.
        #[test]
        fn the_share_cap_is_the_largest_level_meeting_the_share(
            counts in proptest::collection::vec(1.0..1e9f64, 1..12),
            share in 0.05..=1.0f64,
        ) {
            let cap = share_cap(counts.clone(), share);
            let capped: Vec<f64> = counts.iter().map(|c| c.min(cap)).collect();
            let total: f64 = capped.iter().sum();
            let largest = capped.iter().copied().fold(0.0, f64::max);
            let n = counts.len() as f64;
            if share * n >= 1.0 + 1e-9 {
                prop_assert!(largest <= share * total * (1.0 + 1e-9), "share {} > {share}", largest / total);
                // A slightly higher level would break the share (or the cap is already the largest count).
                let max = counts.iter().copied().fold(0.0, f64::max);
                if cap < max {
                    let higher = cap * (1.0 + 1e-6);
                    let t: f64 = counts.iter().map(|c| c.min(higher)).sum();
                    prop_assert!(higher.min(max) > share * t * (1.0 - 1e-9));
                }
            } else if share * n < 1.0 - 1e-9 {
                let smallest = counts.iter().copied().fold(f64::INFINITY, f64::min);
                prop_assert!(capped.iter().all(|&c| c == smallest), "infeasible share: equal weights");
            }
        }
    }
}

//! The coordinator's `[influence]` section: how much any one hospital can move the model and the gate.
//!
//! A hospital's FedAvg weight is the noisy example count it released at join. That count is a DP release the
//! coordinator cannot check, so a hostile hospital can claim any number. The section bounds what the claim buys:
//! - `weighting = "uniform"` ignores the counts;
//! - otherwise a count counts for at most `max_weight` examples, and the weights of a round are capped at one
//!   common level so that no node holds more than `max_share` of the total (the node's *bounded share*);
//! - `max_update_norm` bounds the L2 norm of every update: honest clients clip to it (post-processing of their
//!   DP release, so free in privacy), and the coordinator refuses a plaintext update beyond it.
//!
//! Pooled evaluation metrics are weighted the same way, so one hospital moves the gate's metric by at most its
//! bounded share of the metric's range.

use super::ConfigError;
use serde::{Deserialize, Serialize};

/// How updates and evaluation reports are weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Weighting {
    /// By each node's released (noisy) join count, capped by `max_weight` and `max_share`.
    #[default]
    Examples,
    /// Every node weighs the same.
    Uniform,
}

/// The `[influence]` section. Every field has a safe default.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluenceSection {
    /// How updates and evaluation reports are weighted.
    #[serde(default)]
    pub weighting: Weighting,
    /// The most examples one node's count may stand for (a larger claim is capped).
    #[serde(default = "default_max_weight")]
    pub max_weight: f64,
    /// The largest fraction of a round's total weight one node may hold, in `(0, 1]`. Where the cap cannot be
    /// met (fewer than `1 / max_share` nodes), the weights become uniform, the smallest share possible.
    #[serde(default = "default_max_share")]
    pub max_share: f64,
    /// The largest L2 norm of one node's update (trained model minus global model); `inf` disables the bound.
    #[serde(default = "default_max_update_norm")]
    pub max_update_norm: f64,
}

fn default_max_weight() -> f64 {
    100_000.0
}

fn default_max_share() -> f64 {
    0.5
}

fn default_max_update_norm() -> f64 {
    DEFAULT_MAX_UPDATE_NORM
}

/// The default bound on an update's L2 norm.
pub const DEFAULT_MAX_UPDATE_NORM: f64 = 10.0;

impl Default for InfluenceSection {
    fn default() -> Self {
        Self {
            weighting: Weighting::default(),
            max_weight: default_max_weight(),
            max_share: default_max_share(),
            max_update_norm: default_max_update_norm(),
        }
    }
}

/// The largest `max_weight` a federation may configure: a billion examples per node. The coordinator sums
/// weighted updates exactly in fixed point, which holds any weight up to this with room to spare.
pub const MAX_WEIGHT_LIMIT: f64 = 1e9;

impl InfluenceSection {
    /// Checks `1 ≤ max_weight ≤` [`MAX_WEIGHT_LIMIT`], `0 < max_share ≤ 1` and a positive `max_update_norm`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.max_weight >= 1.0 && self.max_weight <= MAX_WEIGHT_LIMIT) {
            return Err(ConfigError::Invalid(format!(
                "influence.max_weight is {}: it must be a number of examples from 1 to {MAX_WEIGHT_LIMIT:e}",
                self.max_weight
            )));
        }
        if !(self.max_share > 0.0 && self.max_share <= 1.0) {
            return Err(ConfigError::Invalid(format!(
                "influence.max_share is {}: it must be in (0, 1]",
                self.max_share
            )));
        }
        if self.max_update_norm.is_nan() || self.max_update_norm <= 0.0 {
            return Err(ConfigError::Invalid(format!(
                "influence.max_update_norm is {}: it must be positive (`inf` disables the bound)",
                self.max_update_norm
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        InfluenceSection::default().validate().unwrap();
        let bad = [
            InfluenceSection { max_weight: 0.5, ..InfluenceSection::default() },
            InfluenceSection { max_weight: 1e10, ..InfluenceSection::default() },
            InfluenceSection { max_share: 0.0, ..InfluenceSection::default() },
            InfluenceSection { max_share: 1.5, ..InfluenceSection::default() },
            InfluenceSection { max_update_norm: -1.0, ..InfluenceSection::default() },
            InfluenceSection { max_update_norm: f64::NAN, ..InfluenceSection::default() },
        ];
        let fields = ["max_weight", "max_weight", "max_share", "max_share", "max_update_norm", "max_update_norm"];
        for (section, field) in bad.iter().zip(fields) {
            let err = section.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn the_section_parses_from_toml() {
        let s: InfluenceSection = toml::from_str("weighting = \"uniform\"\nmax_share = 0.25").unwrap();
        assert_eq!(s.weighting, Weighting::Uniform);
        assert!((s.max_share - 0.25).abs() < 1e-12);
        assert!((s.max_update_norm - DEFAULT_MAX_UPDATE_NORM).abs() < 1e-12);
        let off: InfluenceSection = toml::from_str("max_update_norm = inf").unwrap();
        off.validate().unwrap();
        assert!(off.max_update_norm.is_infinite());
    }
}

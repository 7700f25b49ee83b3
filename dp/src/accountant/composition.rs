//! The composition rule of a node's whole privacy spend: DP-SGD runs composed in one RDP accountant, plus pure
//! ε-DP releases by basic composition.
//!
//! ```text
//! ε(δ) = ε_RDP(δ) + Σ ε_pure
//! ```
//!
//! - ε_RDP(δ): every sampled Gaussian event is composed in one [`RdpAccountant`] (RDP adds over steps at each
//!   order, Mironov 2017) and converted at δ (Balle et al. 2020, Theorem 21). It is 0 without such events.
//! - Σ ε_pure: pure ε-DP releases (the OpenDP count, histogram and statistics) add their ε, basic sequential
//!   composition (Dwork and Roth 2014, Theorem 3.16), and no δ.
//!
//! Both the client that enforces its budget and the auditor that recomputes a ledger use this one rule.

use super::{AccountantError, Delta, RdpAccountant, SampledGaussian};

/// A running account of one node's privacy spend under the composition rule of the [module docs](self).
///
/// # Example
/// ```
/// use cohort_dp::accountant::{PrivacyAccount, SampledGaussian};
/// let mut account = PrivacyAccount::new();
/// account.add_sampled_gaussian(&SampledGaussian { q: 0.01, sigma: 1.0, steps: 1000 })?;
/// account.add_pure(0.1)?;
/// let eps = account.epsilon(1e-5)?;
/// assert!((eps - 2.2014).abs() < 1e-3); // dp-accounting 0.6.0 gives 2.1014 for the DP-SGD part
/// # Ok::<(), cohort_dp::accountant::AccountantError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrivacyAccount {
    rdp: RdpAccountant,
    sampled_gaussian_events: usize,
    pure: f64,
}

impl PrivacyAccount {
    /// An account that has spent nothing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `event.steps` steps of the Poisson-subsampled Gaussian.
    ///
    /// # Errors
    /// [`AccountantError::SampleRate`] or [`AccountantError::NoiseMultiplier`]; the account is then unchanged.
    pub fn add_sampled_gaussian(&mut self, event: &SampledGaussian) -> Result<&mut Self, AccountantError> {
        self.rdp.compose_event(event)?;
        self.sampled_gaussian_events += 1;
        Ok(self)
    }

    /// Adds a pure ε-DP release.
    ///
    /// # Errors
    /// [`AccountantError::Epsilon`] for an ε that is negative, infinite or NaN; the account is then unchanged.
    pub fn add_pure(&mut self, epsilon: f64) -> Result<&mut Self, AccountantError> {
        if !(epsilon.is_finite() && epsilon >= 0.0) {
            return Err(AccountantError::Epsilon(epsilon));
        }
        self.pure += epsilon;
        Ok(self)
    }

    /// The ε spent so far, at `delta` (+∞ when a DP-SGD event gave no finite bound, e.g. σ = 0).
    ///
    /// # Errors
    /// [`AccountantError::Delta`] for δ outside (0, 1), asked only when a DP-SGD event was added.
    pub fn epsilon(&self, delta: f64) -> Result<f64, AccountantError> {
        let rdp = if self.sampled_gaussian_events == 0 { 0.0 } else { self.rdp.epsilon(Delta::new(delta)?).get() };
        Ok(rdp + self.pure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_adds_pure_releases_to_the_rdp_epsilon() {
        let event = SampledGaussian { q: 0.01, sigma: 1.0, steps: 1000 };
        let mut account = PrivacyAccount::new();
        assert_eq!(account.epsilon(1e-5).unwrap(), 0.0);
        account.add_pure(0.25).unwrap();
        assert_eq!(account.epsilon(1e-5).unwrap(), 0.25);
        account.add_sampled_gaussian(&event).unwrap();
        let rdp = super::super::epsilon(&[event], 1e-5).unwrap();
        assert!((account.epsilon(1e-5).unwrap() - (rdp + 0.25)).abs() < 1e-12);
        assert!((rdp - 2.101365).abs() < 1e-3);
    }

    #[test]
    fn invalid_events_leave_the_account_unchanged() {
        let mut account = PrivacyAccount::new();
        assert!(account.add_pure(-1.0).is_err());
        assert!(account.add_pure(f64::NAN).is_err());
        assert!(account.add_sampled_gaussian(&SampledGaussian { q: 2.0, sigma: 1.0, steps: 1 }).is_err());
        assert_eq!(account, PrivacyAccount::new());
        // Without DP-SGD events δ is not consulted.
        assert_eq!(account.epsilon(0.0).unwrap(), 0.0);
    }
}

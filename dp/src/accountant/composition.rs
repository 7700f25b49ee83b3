//! The composition rule of a node's whole privacy spend: DP-SGD runs (Poisson-subsampled Gaussian events) and
//! pure ε-DP releases (the OpenDP count, histogram and statistics), composed in one accountant of a chosen
//! [`AccountantKind`], PLD by default.
//!
//! ```text
//! ε(δ) = min( ε_A(DP-SGD ∘ pure releases)(δ),  ε_A(DP-SGD)(δ) + Σ ε_pure )
//! ```
//!
//! Both terms are valid (ε, δ) bounds of the whole spend, so their minimum is too; the second is the previous
//! rule (basic composition of the pure releases, Dwork and Roth 2014, Theorem 3.16), so the rule never gives a
//! larger ε than before, and the first is the tighter one in practice.
//!
//! - **RDP** ([`AccountantKind::Rdp`]): every sampled Gaussian event adds its RDP at each order (Mironov 2017,
//!   Proposition 1), and a pure ε-DP release adds `min(ε, α·ε²/2)` at order α: ε-DP implies ½ε²-zCDP (Bun and
//!   Steinke 2016, "Concentrated Differential Privacy: Simplifications, Extensions, and Lower Bounds",
//!   Proposition 1.4), i.e. RDP α·ε²/2 at every order α (their Definition 1.1), and ε-DP is (∞, ε)-RDP, so
//!   (α, ε)-RDP at every α since Rényi divergence is non-decreasing in α (Mironov 2017, Section III; van Erven
//!   and Harremoës 2014, Theorem 3). The curve is converted at δ by Balle et al. 2020, Theorem 21.
//! - **PLD** ([`AccountantKind::Pld`]): the events' discrete PLDs and, for each pure release, the two-point
//!   randomized-response PLD that dominates every ε-DP mechanism are convolved ([`super::pld`]), and ε(δ) is
//!   read off the composition.
//! - Without any sampled Gaussian event, δ is consulted only if it lies in (0, 1); otherwise (e.g. δ = 0) the
//!   spend is Σ ε_pure, the pure-DP guarantee.
//!
//! The events are kept as a multiset in a canonical order (equal (q, σ) merged, steps added), so the result does
//! not depend on the order of the records, to the last bit. Both the client that enforces its budget and the
//! auditor that recomputes a ledger use this one rule.

use super::pld::PldAccountant;
use super::{
    AccountantError, AccountantKind, DEFAULT_ACCOUNTANT, Delta, Epsilon, NoiseMultiplier, RdpAccountant, SampleRate,
    SampledGaussian, epsilon_from_rdp,
};

/// A running account of one node's privacy spend under the composition rule of the [module docs](self), by one
/// accountant ([`new`](Self::new) and [`Default`]: PLD).
///
/// # Example
/// ```
/// use cohort_dp::accountant::{AccountantKind, PrivacyAccount, SampledGaussian};
/// let event = SampledGaussian { q: 0.01, sigma: 1.0, steps: 1000 };
/// let mut pld = PrivacyAccount::new();
/// pld.add_sampled_gaussian(&event)?.add_pure(0.1)?;
/// // dp-accounting 0.6.0: 1.866488 (PLDAccountant composed with from_privacy_parameters(0.1, 0)).
/// assert!((pld.epsilon(1e-5)? - 1.8665).abs() < 1e-3);
/// let mut rdp = PrivacyAccount::with_accountant(AccountantKind::Rdp);
/// rdp.add_sampled_gaussian(&event)?.add_pure(0.1)?;
/// assert!(rdp.epsilon(1e-5)? < 2.1014 + 0.1); // tighter than RDP + basic composition
/// # Ok::<(), cohort_dp::accountant::AccountantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PrivacyAccount {
    kind: AccountantKind,
    /// The events as a canonical multiset (the PLD accountant's own store, also read for RDP).
    events: PldAccountant,
}

impl Default for PrivacyAccount {
    fn default() -> Self {
        Self::new()
    }
}

impl PrivacyAccount {
    /// An account that has spent nothing, by the default accountant ([`DEFAULT_ACCOUNTANT`], PLD).
    #[must_use]
    pub fn new() -> Self {
        Self::with_accountant(DEFAULT_ACCOUNTANT)
    }

    /// An account that has spent nothing, by accountant `kind`.
    #[must_use]
    pub fn with_accountant(kind: AccountantKind) -> Self {
        Self { kind, events: PldAccountant::new() }
    }

    /// The accountant of this account.
    #[must_use]
    pub fn kind(&self) -> AccountantKind {
        self.kind
    }

    /// Adds `event.steps` steps of the Poisson-subsampled Gaussian (nothing when q = 0 or steps = 0).
    ///
    /// # Errors
    /// [`AccountantError::SampleRate`] or [`AccountantError::NoiseMultiplier`]; the account is then unchanged.
    pub fn add_sampled_gaussian(&mut self, event: &SampledGaussian) -> Result<&mut Self, AccountantError> {
        self.events.compose_event(event)?;
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
        self.events.compose_pure(Epsilon(epsilon));
        Ok(self)
    }

    fn has_gaussians(&self) -> bool {
        self.events.gaussian_groups().next().is_some()
    }

    fn pure_sum(&self) -> f64 {
        self.events.pure_groups().map(|(e, c)| e * c as f64).sum()
    }

    /// The ε spent so far at `delta`, by the rule of the [module docs](self) (+∞ when a DP-SGD event gives no
    /// finite bound, e.g. σ = 0).
    ///
    /// # Errors
    /// [`AccountantError::Delta`] for δ outside (0, 1), asked only when a DP-SGD event was added.
    pub fn epsilon(&self, delta: f64) -> Result<f64, AccountantError> {
        let pure = self.pure_sum();
        if !self.has_gaussians() {
            return match Delta::new(delta) {
                Ok(d) if pure > 0.0 => Ok(self.composed(d)?.0.min(pure)),
                _ => Ok(pure),
            };
        }
        let (folded, gaussian) = self.composed(Delta::new(delta)?)?;
        Ok(folded.min(gaussian + pure))
    }

    /// The previous rule, ε_A(DP-SGD)(δ) + Σ ε_pure: never below [`epsilon`](Self::epsilon).
    ///
    /// # Errors
    /// As [`epsilon`](Self::epsilon).
    pub fn epsilon_basic(&self, delta: f64) -> Result<f64, AccountantError> {
        let pure = self.pure_sum();
        if !self.has_gaussians() {
            return Ok(pure);
        }
        Ok(self.composed(Delta::new(delta)?)?.1 + pure)
    }

    /// (ε of everything composed in the accountant, ε of the DP-SGD events alone) at δ.
    fn composed(&self, delta: Delta) -> Result<(f64, f64), AccountantError> {
        match self.kind {
            AccountantKind::Rdp => {
                let mut rdp = RdpAccountant::new();
                for (q, sigma, steps) in self.events.gaussian_groups() {
                    rdp.compose(SampleRate(q), NoiseMultiplier(sigma), steps);
                }
                let gaussian = if self.has_gaussians() { rdp.epsilon(delta).get() } else { 0.0 };
                let mut curve = rdp.rdp().to_vec();
                for (eps, count) in self.events.pure_groups() {
                    for (r, &a) in curve.iter_mut().zip(rdp.orders()) {
                        *r += count as f64 * eps.min(a * eps * eps / 2.0);
                    }
                }
                Ok((epsilon_from_rdp(rdp.orders(), &curve, delta.get())?, gaussian))
            }
            AccountantKind::Pld => {
                let (gaussian, full) = self.events.plds();
                Ok((full.epsilon_for_delta(delta.get()), gaussian.epsilon_for_delta(delta.get())))
            }
        }
    }
}

/// One event of a node's privacy spend, as a ledger record states it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SpendEvent {
    /// `steps` steps of the Poisson-subsampled Gaussian (DP-SGD and DP-SGD tuning runs).
    SampledGaussian(SampledGaussian),
    /// A pure ε-DP release of this ε (an OpenDP count, histogram or statistics).
    PureEpsilon(f64),
}

/// Which of the rule's bounds a cumulative ε states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bound {
    /// The rule of the [module docs](self): the smaller of the composed and the basic bound
    /// ([`PrivacyAccount::epsilon`]).
    #[default]
    Composed,
    /// Basic composition alone, ε_A(DP-SGD)(δ) + Σ ε_pure ([`PrivacyAccount::epsilon_basic`]): what records of
    /// RDP version 1 stated.
    Basic,
}

impl Bound {
    /// The bound that records written by accountant `kind` at `version` state: [`Bound::Basic`] for RDP
    /// versions starting with `1`, [`Bound::Composed`] otherwise.
    #[must_use]
    pub fn of_recorded(kind: AccountantKind, version: &str) -> Self {
        if kind == AccountantKind::Rdp && version.starts_with('1') { Self::Basic } else { Self::Composed }
    }
}

impl PrivacyAccount {
    /// Adds one event ([`add_sampled_gaussian`](Self::add_sampled_gaussian) or [`add_pure`](Self::add_pure)).
    ///
    /// # Errors
    /// As those two; the account is then unchanged.
    pub fn add_event(&mut self, event: &SpendEvent) -> Result<&mut Self, AccountantError> {
        match event {
            SpendEvent::SampledGaussian(g) => self.add_sampled_gaussian(g),
            SpendEvent::PureEpsilon(e) => self.add_pure(*e),
        }
    }
}

/// The composition rule of the [module docs](self), the one definition of a node's cumulative ε: every event of
/// `events`, in order, composed in one account of accountant `kind`, read at `delta` under `bound`. Both the
/// client that enforces its budget and the auditor that recomputes a ledger call this.
///
/// # Example
/// ```
/// use cohort_dp::accountant::composition::{Bound, SpendEvent, cumulative_epsilon};
/// use cohort_dp::accountant::{AccountantKind, SampledGaussian};
/// let events = [SpendEvent::SampledGaussian(SampledGaussian { q: 0.01, sigma: 1.0, steps: 1000 }),
///     SpendEvent::PureEpsilon(0.1)];
/// let tight = cumulative_epsilon(AccountantKind::Pld, Bound::Composed, events, 1e-5)?;
/// let basic = cumulative_epsilon(AccountantKind::Pld, Bound::Basic, events, 1e-5)?;
/// assert!(tight <= basic);
/// assert_eq!(cumulative_epsilon(AccountantKind::Pld, Bound::Composed, [], 1e-5)?, 0.0);
/// # Ok::<(), cohort_dp::accountant::AccountantError>(())
/// ```
///
/// # Errors
/// [`AccountantError`] for an event the accountant rejects (see [`PrivacyAccount::add_event`]) or a δ outside
/// (0, 1) when a DP-SGD event was added.
pub fn cumulative_epsilon(
    kind: AccountantKind,
    bound: Bound,
    events: impl IntoIterator<Item = SpendEvent>,
    delta: f64,
) -> Result<f64, AccountantError> {
    let mut account = PrivacyAccount::with_accountant(kind);
    for event in events {
        account.add_event(&event)?;
    }
    match bound {
        Bound::Composed => account.epsilon(delta),
        Bound::Basic => account.epsilon_basic(delta),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: SampledGaussian = SampledGaussian { q: 0.01, sigma: 1.0, steps: 1000 };

    #[test]
    fn without_pure_releases_the_rule_is_the_accountant() {
        for kind in AccountantKind::ALL {
            let mut account = PrivacyAccount::with_accountant(kind);
            assert_eq!(account.epsilon(1e-5).unwrap(), 0.0);
            account.add_sampled_gaussian(&EVENT).unwrap();
            let direct = super::super::epsilon_with(kind, &[EVENT], 1e-5).unwrap();
            assert_eq!(account.epsilon(1e-5).unwrap(), direct);
            assert_eq!(account.epsilon_basic(1e-5).unwrap(), direct);
        }
        assert_eq!(PrivacyAccount::default().kind(), AccountantKind::Pld);
        assert_eq!(PrivacyAccount::new(), PrivacyAccount::with_accountant(AccountantKind::Pld));
    }

    #[test]
    fn pure_releases_fold_into_the_rdp_curve() {
        // min(ε, αε²/2) at every order: checked against the curve built by hand.
        let mut account = PrivacyAccount::with_accountant(AccountantKind::Rdp);
        account.add_sampled_gaussian(&EVENT).unwrap().add_pure(0.1).unwrap().add_pure(1.5).unwrap();
        let mut rdp = RdpAccountant::new();
        rdp.compose_event(&EVENT).unwrap();
        let curve: Vec<f64> = rdp
            .rdp()
            .iter()
            .zip(rdp.orders())
            .map(|(&r, &a)| r + 0.1f64.min(a * 0.01 / 2.0) + 1.5f64.min(a * 2.25 / 2.0))
            .collect();
        let by_hand = epsilon_from_rdp(rdp.orders(), &curve, 1e-5).unwrap();
        let got = account.epsilon(1e-5).unwrap();
        let basic = account.epsilon_basic(1e-5).unwrap();
        println!("RDP + pure 0.1 + 1.5: folded {got:.6}, basic {basic:.6}");
        assert_eq!(got, by_hand.min(basic));
        assert!((basic - (2.101365 + 1.6)).abs() < 1e-3);
        assert!(got < basic - 0.05, "{got} vs {basic}");
    }

    #[test]
    fn pure_releases_fold_into_the_pld_as_dp_accounting() {
        // benches/peers/dp_accounting_reference.py, dp-accounting 0.6.0: the sampled Gaussian PLD (1e-4) composed
        // with from_privacy_parameters(ε, 0) for each release, epsilon at δ = 1e-5.
        let cases: [(Option<SampledGaussian>, &[f64], f64); 5] = [
            (Some(EVENT), &[0.1], 1.866488),
            (Some(EVENT), &[0.1, 0.25], 2.041460),
            (None, &[0.5, 0.5, 0.5], 1.499959),
            (None, &[0.1; 20], 1.597981),
            (Some(SampledGaussian { q: 1.0, sigma: 5.0, steps: 10 }), &[1.0], 3.546953),
        ];
        for (event, pures, expected) in cases {
            let mut account = PrivacyAccount::new();
            if let Some(e) = event {
                account.add_sampled_gaussian(&e).unwrap();
            }
            for &p in pures {
                account.add_pure(p).unwrap();
            }
            let got = account.epsilon(1e-5).unwrap();
            let basic = account.epsilon_basic(1e-5).unwrap();
            println!("PLD {event:?} + {pures:?}: {got:.6} (dp-accounting {expected}), basic {basic:.6}");
            assert!((got - expected).abs() < 1e-4_f64.max(1e-5 * expected), "{got} vs {expected}");
            assert!(got <= basic);
        }
    }

    #[test]
    fn the_new_rule_never_exceeds_the_old_one() {
        let events = [
            SampledGaussian { q: 0.01, sigma: 1.0, steps: 1000 },
            SampledGaussian { q: 0.2, sigma: 3.0, steps: 20 },
            SampledGaussian { q: 1.0, sigma: 8.0, steps: 3 },
        ];
        for kind in AccountantKind::ALL {
            for pures in [&[0.01][..], &[0.1, 0.1], &[1.0, 0.5, 0.05], &[5.0]] {
                for e in &events {
                    let mut account = PrivacyAccount::with_accountant(kind);
                    account.add_sampled_gaussian(e).unwrap();
                    let alone = account.epsilon(1e-5).unwrap();
                    for &p in pures {
                        account.add_pure(p).unwrap();
                    }
                    let (new, old) = (account.epsilon(1e-5).unwrap(), account.epsilon_basic(1e-5).unwrap());
                    let sum: f64 = pures.iter().sum();
                    assert!((old - (alone + sum)).abs() < 1e-12, "{kind} {e:?} {pures:?}");
                    assert!(new <= old && new >= alone, "{kind} {e:?} {pures:?}: new {new}, old {old}");
                }
            }
        }
    }

    #[test]
    fn the_rule_is_independent_of_the_order() {
        let items: [Result<SampledGaussian, f64>; 6] = [
            Ok(SampledGaussian { q: 0.01, sigma: 1.0, steps: 300 }),
            Err(0.1),
            Ok(SampledGaussian { q: 0.05, sigma: 2.0, steps: 40 }),
            Ok(SampledGaussian { q: 0.01, sigma: 1.0, steps: 700 }),
            Err(0.25),
            Err(0.1),
        ];
        for kind in AccountantKind::ALL {
            let build = |order: &[usize]| {
                let mut account = PrivacyAccount::with_accountant(kind);
                for &i in order {
                    match items[i] {
                        Ok(e) => account.add_sampled_gaussian(&e).map(|_| ()).unwrap(),
                        Err(p) => account.add_pure(p).map(|_| ()).unwrap(),
                    }
                }
                account
            };
            let forward = build(&[0, 1, 2, 3, 4, 5]);
            let eps = forward.epsilon(1e-5).unwrap();
            for order in [[5, 4, 3, 2, 1, 0], [3, 1, 5, 0, 4, 2], [2, 0, 4, 1, 5, 3]] {
                let other = build(&order);
                assert_eq!(other, forward);
                assert_eq!(other.epsilon(1e-5).unwrap(), eps, "{kind} {order:?}");
            }
        }
    }

    #[test]
    fn invalid_events_leave_the_account_unchanged() {
        for kind in AccountantKind::ALL {
            let mut account = PrivacyAccount::with_accountant(kind);
            assert!(account.add_pure(-1.0).is_err());
            assert!(account.add_pure(f64::NAN).is_err());
            assert!(account.add_pure(f64::INFINITY).is_err());
            assert!(account.add_sampled_gaussian(&SampledGaussian { q: 2.0, sigma: 1.0, steps: 1 }).is_err());
            assert_eq!(account, PrivacyAccount::with_accountant(kind));
            // Without DP-SGD events δ is not consulted when out of range: pure DP.
            assert_eq!(account.epsilon(0.0).unwrap(), 0.0);
            account.add_pure(0.3).unwrap();
            assert_eq!(account.epsilon(0.0).unwrap(), 0.3);
            assert!(account.epsilon(1e-5).unwrap() <= 0.3);
            account.add_sampled_gaussian(&EVENT).unwrap();
            assert!(matches!(account.epsilon(0.0), Err(AccountantError::Delta(_))));
            // σ = 0: no guarantee.
            account.add_sampled_gaussian(&SampledGaussian { q: 0.1, sigma: 0.0, steps: 1 }).unwrap();
            assert_eq!(account.epsilon(1e-5).unwrap(), f64::INFINITY);
        }
    }
}

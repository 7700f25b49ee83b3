//! The simulated world: how fast each client computes, how fast its link is, and how often it drops out of a
//! round. [`Conditions`] are the distributions; each client draws its [`Profile`] from them once.
//!
//! The cost model, in virtual time (see [`crate::network`]):
//! - a message takes the client's one-way latency plus its wire size over the client's bandwidth, each way; its
//!   size is that of its protobuf encoding, with every ECDSA signature in it counted at its longest DER length
//!   (72 bytes), so that simulated time does not vary with the signatures' random nonces;
//! - a training task takes `local_epochs × training rows / speed`, and an evaluation `held-out rows / (3 ×
//!   speed)` (a forward pass costs about a third of a training step);
//! - cryptography (key shares, RLWE encryption, partial decryptions) and the coordinator's own work take no
//!   virtual time; on real machines they take milliseconds per client, well under the latency.

use rand::Rng;
use rand_distr::{Distribution, LogNormal};
use std::str::FromStr;
use std::time::Duration;

/// A log-normal spread across clients: `median × exp(sigma × Z)` with `Z` standard normal, so half the clients
/// are below the median and `sigma` 0 gives every client the median. Written `MEDIAN` or `MEDIAN,SIGMA`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Spread {
    /// The median.
    pub median: f64,
    /// The standard deviation of the logarithm.
    pub sigma: f64,
}

impl Spread {
    /// A spread around `median` with log-standard deviation `sigma`.
    pub const fn new(median: f64, sigma: f64) -> Self {
        Self { median, sigma }
    }

    fn check(&self, what: &str) -> Result<(), ConditionsError> {
        if !(self.median.is_finite() && self.median > 0.0) {
            return Err(ConditionsError(format!("the median {what} must be a positive number, not {}", self.median)));
        }
        if !(self.sigma.is_finite() && (0.0..=3.0).contains(&self.sigma)) {
            return Err(ConditionsError(format!("the {what} sigma must be between 0 and 3, not {}", self.sigma)));
        }
        Ok(())
    }

    fn draw(&self, rng: &mut impl Rng) -> f64 {
        if self.sigma == 0.0 {
            // Exactly the median (exp(ln m) need not be m), drawing nothing.
            return self.median;
        }
        // Checked by `Conditions::validate`; a spread that cannot be drawn from gives the median.
        LogNormal::new(self.median.ln(), self.sigma).map_or(self.median, |d| d.sample(rng))
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{}", self.median, self.sigma)
    }
}

impl FromStr for Spread {
    type Err = ConditionsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let number = |part: &str| {
            part.trim()
                .parse::<f64>()
                .map_err(|_| ConditionsError(format!("{s:?} is not MEDIAN or MEDIAN,SIGMA (two numbers)")))
        };
        match s.split_once(',') {
            Some((median, sigma)) => Ok(Self { median: number(median)?, sigma: number(sigma)? }),
            None => Ok(Self { median: number(s)?, sigma: 0.0 }),
        }
    }
}

/// Conditions that cannot be simulated, saying why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConditionsError(String);

/// The distributions every client's [`Profile`] is drawn from, and the dropout rate.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// Training examples a client processes per second (default median 2,000, sigma 0.5: a tenth of the
    /// clients are below 1,050 and a tenth above 3,800).
    pub compute: Spread,
    /// A client's link bandwidth in Mbit/s, the same both ways (default median 20, sigma 1: from hospital
    /// fibre to a congested VPN).
    pub bandwidth_mbps: Spread,
    /// The one-way latency between any client and the coordinator, in milliseconds (default 40).
    pub latency_ms: f64,
    /// The probability that a client selected for a round drops out of it (default 0). A client that drops
    /// goes silent at one point of its round and stays offline for one round deadline: in a plaintext round it
    /// trains but its update is lost; in a secure round it is lost either before its encrypted update or after
    /// it, before its partial decryption (one or the other with equal odds). A secure round survives the first
    /// kind down to its quorum; the second fails the attempt, because a decryption request names exactly the
    /// threshold's number of responders, and the round is retried without the lost node (the report lists the
    /// failed attempts).
    pub dropout_rate: f64,
}

impl Default for Conditions {
    fn default() -> Self {
        Self {
            compute: Spread::new(2000.0, 0.5),
            bandwidth_mbps: Spread::new(20.0, 1.0),
            latency_ms: 40.0,
            dropout_rate: 0.0,
        }
    }
}

impl Conditions {
    /// Checks that every distribution can be drawn from.
    ///
    /// # Errors
    /// [`ConditionsError`] naming the setting.
    pub fn validate(&self) -> Result<(), ConditionsError> {
        self.compute.check("compute speed (examples per second)")?;
        self.bandwidth_mbps.check("bandwidth (Mbit/s)")?;
        if !(self.latency_ms.is_finite() && (0.1..=60_000.0).contains(&self.latency_ms)) {
            return Err(ConditionsError(format!(
                "the latency must be between 0.1 and 60000 ms, not {}",
                self.latency_ms
            )));
        }
        if !(0.0..1.0).contains(&self.dropout_rate) {
            return Err(ConditionsError(format!(
                "the dropout rate is a probability below 1, not {}",
                self.dropout_rate
            )));
        }
        Ok(())
    }

    /// One client's draw.
    pub fn profile(&self, rng: &mut impl Rng) -> Profile {
        Profile {
            examples_per_second: self.compute.draw(rng),
            bytes_per_second: self.bandwidth_mbps.draw(rng) * 1e6 / 8.0,
            latency: Duration::from_secs_f64(self.latency_ms / 1000.0),
        }
    }
}

/// One client's machine and link, drawn from [`Conditions`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// Training examples processed per second.
    pub examples_per_second: f64,
    /// Link bandwidth, bytes per second each way.
    pub bytes_per_second: f64,
    /// One-way latency.
    pub latency: Duration,
}

impl Profile {
    /// How long `bytes` take to arrive: the latency plus the time on the wire.
    pub fn transfer(&self, bytes: usize) -> Duration {
        self.latency + Duration::from_secs_f64(bytes as f64 / self.bytes_per_second)
    }

    /// How long `epochs` over `rows` training rows take.
    pub fn training(&self, rows: usize, epochs: u32) -> Duration {
        Duration::from_secs_f64(f64::from(epochs) * rows as f64 / self.examples_per_second)
    }

    /// How long evaluating `rows` held-out rows takes.
    pub fn evaluation(&self, rows: usize) -> Duration {
        Duration::from_secs_f64(rows as f64 / (3.0 * self.examples_per_second))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn spreads_parse_and_print() {
        assert_eq!("2000".parse::<Spread>(), Ok(Spread::new(2000.0, 0.0)));
        assert_eq!("20, 1.5".parse::<Spread>(), Ok(Spread::new(20.0, 1.5)));
        assert_eq!(Spread::new(3.0, 0.25).to_string().parse::<Spread>(), Ok(Spread::new(3.0, 0.25)));
        assert!("fast".parse::<Spread>().unwrap_err().to_string().contains("MEDIAN,SIGMA"));
    }

    #[test]
    fn a_draw_has_the_documented_median_and_spread() {
        let spread = Spread::new(2000.0, 0.5);
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let mut logs: Vec<f64> = (0..20_000).map(|_| spread.draw(&mut rng).ln()).collect();
        logs.sort_by(f64::total_cmp);
        let median = logs[logs.len() / 2].exp();
        let mean = logs.iter().sum::<f64>() / logs.len() as f64;
        let sd = (logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / logs.len() as f64).sqrt();
        assert!((median / 2000.0 - 1.0).abs() < 0.03, "median {median}");
        assert!((sd - 0.5).abs() < 0.02, "log sd {sd}");
        // The documented deciles: a tenth below 1,050 and a tenth above 3,800.
        let (d1, d9) = (logs[logs.len() / 10].exp(), logs[logs.len() * 9 / 10].exp());
        assert!((1000.0..1100.0).contains(&d1) && (3650.0..3950.0).contains(&d9), "deciles {d1} {d9}");
        assert_eq!(Spread::new(7.0, 0.0).draw(&mut rng), 7.0);
    }

    #[test]
    fn the_cost_model_is_the_documented_one() {
        let p = Profile { examples_per_second: 1000.0, bytes_per_second: 1e6, latency: Duration::from_millis(40) };
        assert_eq!(p.transfer(500_000), Duration::from_millis(540));
        assert_eq!(p.training(250, 2), Duration::from_millis(500));
        assert_eq!(p.evaluation(300), Duration::from_millis(100));
    }

    #[test]
    fn impossible_conditions_are_refused_by_name() {
        let bad = |c: Conditions| c.validate().unwrap_err().to_string();
        let base = Conditions::default();
        assert!(base.validate().is_ok());
        assert!(bad(Conditions { dropout_rate: 1.0, ..base }).contains("dropout"));
        assert!(bad(Conditions { latency_ms: 0.0, ..base }).contains("latency"));
        assert!(bad(Conditions { compute: Spread::new(-1.0, 0.1), ..base }).contains("compute"));
        assert!(bad(Conditions { bandwidth_mbps: Spread::new(1.0, f64::NAN), ..base }).contains("bandwidth"));
    }
}

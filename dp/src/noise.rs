//! Gaussian noise N(0, σ²C²) for DP-SGD, from a ChaCha12 CSPRNG seeded by the operating system.
//!
//! # Sampler and why
//! A textbook floating-point sampler leaks through the pattern of values it can and cannot output: Mironov 2012
//! ("On Significance of the Least Significant Bits for Differential Privacy", CCS) broke the Laplace mechanism
//! this way, and Jin, McMurtry, Rubinstein and Ohrimenko 2022 ("Are We There Yet? Timing and Floating-Point
//! Attacks on Differential Privacy Systems", IEEE S&P) did the same to Gaussian samplers (Box–Muller, polar).
//!
//! Gradients need millions of samples per second, which rules out an exact discrete Gaussian (OpenDP's runs at
//! ~12k samples/s). This module therefore follows Opacus' `secure_mode` (after Holohan and Braghin 2021,
//! "Secure Random Sampling in Differential Privacy", ESORICS): every output is the **sum of
//! [`SECURE_DRAWS`] = 4 independent standard normals scaled by 1/√4 = 1/2**, which is exactly N(0, 1) in
//! distribution, and whose low-order bits are a sum of four independent draws' bits, so the gaps and
//! structure of any single draw's floating-point output are smoothed out. Each draw comes from the ziggurat
//! sampler of `rand_distr::StandardNormal` (Marsaglia and Tsang 2000, f64, 53-bit mantissas), fed by
//! ChaCha12 (`rand_chacha`). The result is scaled by σ·C in f64 and then added to the f32 gradient, which
//! rounds once more.
//!
//! # Why ChaCha12
//! Noise generation dominates the cost of a DP-SGD step (a 200k-parameter model needs 800k normal draws per
//! step). ChaCha12 is the algorithm of `rand`'s `StdRng`, the crate's recommended CSPRNG; the best known
//! attacks reach 7 rounds of ChaCha (Aumasson 2019, "Too Much Crypto", argues 8 suffice). Measured here it
//! draws the noise about 1.3× faster than ChaCha20, which the DP-SGD step needs to stay near the cost of a
//! non-private one (`benches/benches/dp_sgd.rs`).
//!
//! This resists the published attacks; it is not a formally exact sampler. The exact alternative for small
//! releases is OpenDP (see `crate::releases`).
//!
//! # Example
//! ```
//! use cohort_dp::clip::ClipNorm;
//! use cohort_dp::noise::{GaussianNoise, NoiseMultiplier};
//! let mut noise = GaussianNoise::from_os();
//! let mut grad = vec![0.0f32; 8];
//! noise.add_dp_noise(&mut grad, NoiseMultiplier::new(1.1).unwrap(), ClipNorm::new(1.0).unwrap());
//! assert!(grad.iter().any(|v| *v != 0.0));
//! ```

use crate::clip::ClipNorm;
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use rand_distr::{Distribution, StandardNormal};

/// How many independent standard normals make one noise value (Opacus secure mode uses 4).
pub const SECURE_DRAWS: usize = 4;

/// A noise parameter outside its domain.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum NoiseError {
    /// A noise multiplier that is negative, NaN or infinite.
    #[error("noise multiplier σ = {0} must be a finite number ≥ 0")]
    NoiseMultiplier(f64),
}

/// The noise multiplier σ of DP-SGD: noise per coordinate is N(0, σ²C²) for clip norm C. Finite and ≥ 0.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct NoiseMultiplier(f64);

impl NoiseMultiplier {
    /// A noise multiplier σ.
    ///
    /// # Errors
    /// [`NoiseError::NoiseMultiplier`] unless `sigma` is finite and ≥ 0.
    pub fn new(sigma: f64) -> Result<Self, NoiseError> {
        if sigma.is_finite() && sigma >= 0.0 { Ok(Self(sigma)) } else { Err(NoiseError::NoiseMultiplier(sigma)) }
    }

    /// σ.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// A source of Gaussian noise for DP-SGD (see the [module docs](self) for the sampler).
#[derive(Debug, Clone)]
pub struct GaussianNoise {
    rng: ChaCha12Rng,
    insecure: bool,
}

impl GaussianNoise {
    /// Noise from a ChaCha12 CSPRNG seeded by the operating system. Use this for real training.
    pub fn from_os() -> Self {
        Self { rng: ChaCha12Rng::from_os_rng(), insecure: false }
    }

    /// INSECURE: deterministic noise from a fixed seed, for reproducible simulation and tests only. Anyone
    /// who knows the seed can subtract the noise, so this provides **no privacy**.
    pub fn from_insecure_seed(seed: u64) -> Self {
        Self { rng: ChaCha12Rng::seed_from_u64(seed), insecure: true }
    }

    /// Whether this source was seeded by hand (and so gives no privacy).
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// One N(0, 1) value: the sum of [`SECURE_DRAWS`] ziggurat draws divided by √[`SECURE_DRAWS`].
    pub fn standard(&mut self) -> f64 {
        let mut sum = 0.0f64;
        for _ in 0..SECURE_DRAWS {
            let z: f64 = StandardNormal.sample(&mut self.rng);
            sum += z;
        }
        // 1/√4 = 0.5 exactly; keep the general form for other draw counts.
        sum * (1.0 / (SECURE_DRAWS as f64).sqrt())
    }

    /// One N(0, std²) value (for `std` ≥ 0). DP code should prefer [`GaussianNoise::add_dp_noise`], whose
    /// newtypes are validated.
    pub fn sample(&mut self, std: f64) -> f64 {
        self.standard() * std
    }

    /// Overwrites every value with independent N(0, std²) noise (rounded to f32 once).
    pub fn fill(&mut self, values: &mut [f32], std: f64) {
        for v in values {
            *v = self.sample(std) as f32;
        }
    }

    /// Adds independent N(0, std²) noise to every value.
    pub fn add_to(&mut self, values: &mut [f32], std: f64) {
        for v in values {
            *v = (f64::from(*v) + self.sample(std)) as f32;
        }
    }

    /// Adds the DP-SGD noise N(0, σ²C²) to every coordinate.
    pub fn add_dp_noise(&mut self, values: &mut [f32], sigma: NoiseMultiplier, clip: ClipNorm) {
        self.add_to(values, sigma.get() * f64::from(clip.get()));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Standard normal CDF.
    fn phi(x: f64) -> f64 {
        0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
    }

    /// Kolmogorov–Smirnov statistic D_n of `samples` against N(mean, std²).
    pub(crate) fn ks_statistic(samples: &mut [f64], mean: f64, std: f64) -> f64 {
        samples.sort_by(f64::total_cmp);
        let n = samples.len() as f64;
        samples.iter().enumerate().fold(0.0, |d, (i, x)| {
            let f = phi((x - mean) / std);
            d.max(f - i as f64 / n).max((i + 1) as f64 / n - f)
        })
    }

    /// Asymptotic p-value of D_n (Kolmogorov distribution, with Stephens' small-sample correction as in
    /// Numerical Recipes `probks`): Q(λ) = 2 Σ_{k≥1} (−1)^{k−1} exp(−2k²λ²), λ = (√n + 0.12 + 0.11/√n)·D.
    pub(crate) fn ks_p_value(d: f64, n: usize) -> f64 {
        let sn = (n as f64).sqrt();
        let lambda = (sn + 0.12 + 0.11 / sn) * d;
        if lambda < 0.2 {
            return 1.0;
        }
        let mut sum = 0.0;
        for k in 1..=100 {
            let k = f64::from(k);
            let term = (-2.0 * k * k * lambda * lambda).exp();
            sum += if k as u32 % 2 == 1 { term } else { -term };
            if term < 1e-16 {
                break;
            }
        }
        (2.0 * sum).clamp(0.0, 1.0)
    }

    const N: usize = 20_000;
    const ALPHA: f64 = 1e-3;

    fn draws(seed: u64, std: f64) -> Vec<f64> {
        let mut noise = GaussianNoise::from_insecure_seed(seed);
        (0..N).map(|_| noise.sample(std)).collect()
    }

    #[test]
    fn kolmogorov_p_value_matches_known_critical_values() {
        // Asymptotic critical values: P(√n·D > 1.3581) = 0.05, P(√n·D > 1.9495) = 0.001.
        let n = 1_000_000;
        assert!((ks_p_value(1.3581 / 1000.0, n) - 0.05).abs() < 1e-3);
        assert!((ks_p_value(1.9495 / 1000.0, n) - 0.001).abs() < 1e-4);
    }

    #[test]
    fn noise_is_n_0_sigma_c_squared() {
        let (sigma, c) = (NoiseMultiplier::new(1.3).unwrap(), ClipNorm::new(0.7).unwrap());
        let std = sigma.get() * f64::from(c.get());
        let mut noise = GaussianNoise::from_insecure_seed(11);
        let mut values = vec![0.0f32; N];
        noise.add_dp_noise(&mut values, sigma, c);
        let mut xs: Vec<f64> = values.iter().map(|v| f64::from(*v)).collect();
        let n = N as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        // Each check at about 4 standard errors (two-sided α ≈ 6e-5).
        assert!(mean.abs() < 4.0 * std / n.sqrt(), "mean {mean}");
        assert!((var / (std * std) - 1.0).abs() < 4.0 * (2.0 / (n - 1.0)).sqrt(), "variance {var} vs {}", std * std);
        // Tails beyond 3σ: p = 2(1 − Φ(3)) = 0.0026998; binomial standard error.
        let p = 2.0 * (1.0 - phi(3.0));
        let tail = xs.iter().filter(|x| x.abs() > 3.0 * std).count() as f64 / n;
        assert!((tail - p).abs() < 4.0 * (p * (1.0 - p) / n).sqrt(), "tail {tail} vs {p}");
        let d = ks_statistic(&mut xs, 0.0, std);
        assert!(ks_p_value(d, N) > ALPHA, "KS D = {d}, p = {}", ks_p_value(d, N));
    }

    #[test]
    fn ks_test_rejects_wrong_distributions() {
        // 10% too wide.
        let mut wide = draws(12, 1.1);
        let d = ks_statistic(&mut wide, 0.0, 1.0);
        assert!(ks_p_value(d, N) < ALPHA, "D = {d}");
        // Shifted by 0.05σ.
        let mut shifted: Vec<f64> = draws(13, 1.0).iter().map(|x| x + 0.05).collect();
        let d = ks_statistic(&mut shifted, 0.0, 1.0);
        assert!(ks_p_value(d, N) < ALPHA, "D = {d}");
        // A uniform distribution of the same variance is rejected too.
        let mut uniform: Vec<f64> = (0..N).map(|i| ((i as f64 + 0.5) / N as f64 - 0.5) * 12f64.sqrt()).collect();
        let d = ks_statistic(&mut uniform, 0.0, 1.0);
        assert!(ks_p_value(d, N) < ALPHA, "D = {d}");
    }

    #[test]
    fn seeded_sources_repeat_and_os_sources_differ() {
        assert_eq!(draws(5, 1.0)[..10], draws(5, 1.0)[..10]);
        assert_ne!(draws(5, 1.0)[..10], draws(6, 1.0)[..10]);
        let (mut a, mut b) = (GaussianNoise::from_os(), GaussianNoise::from_os());
        assert!(!a.is_insecure() && GaussianNoise::from_insecure_seed(1).is_insecure());
        assert_ne!(a.standard(), b.standard());
    }

    #[test]
    fn noise_multiplier_is_validated() {
        assert!(NoiseMultiplier::new(0.0).is_ok());
        for bad in [-0.1, f64::NAN, f64::INFINITY] {
            assert!(NoiseMultiplier::new(bad).is_err());
        }
    }
}

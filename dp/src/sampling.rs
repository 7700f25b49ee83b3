//! Poisson sampling of DP-SGD batches: each of the n records joins a step's batch independently with
//! probability q, so batch sizes are Binomial(n, q) and a batch may be empty.
//!
//! This is the sampling the RDP accountant of the subsampled Gaussian assumes (Abadi et al. 2016, "Deep
//! Learning with Differential Privacy"; Mironov, Talwar and Zhang 2019). Shuffled fixed-size batches would not
//! match it (Chua et al., ICML 2024, "How Private are DP-SGD Implementations?").
//!
//! Each inclusion is one Bernoulli(q) trial from `rand::distr::Bernoulli`, which compares a uniform 64-bit
//! integer with ⌊q·2⁶⁴⌋: exact to 2⁻⁶⁴ and free of floating-point artefacts. The bits come from a ChaCha12
//! CSPRNG seeded by the operating system.
//!
//! # Example
//! ```
//! use cohort_dp::sampling::{PoissonSampler, SampleRate};
//! let mut sampler = PoissonSampler::from_os();
//! let batch = sampler.sample(1000, SampleRate::new(0.01).unwrap());
//! assert!(batch.windows(2).all(|w| w[0] < w[1]) && batch.iter().all(|i| *i < 1000));
//! ```

use rand::distr::{Bernoulli, Distribution};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

/// A sampling parameter outside its domain.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SamplingError {
    /// A sampling rate outside (0, 1].
    #[error("sample rate q = {0} must be in (0, 1]")]
    SampleRate(f64),
}

/// The Poisson sampling rate q, in (0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRate {
    q: f64,
    trial: Bernoulli,
}

impl SampleRate {
    /// A sampling rate q.
    ///
    /// # Errors
    /// [`SamplingError::SampleRate`] unless `0 < q ≤ 1`.
    pub fn new(q: f64) -> Result<Self, SamplingError> {
        if !(q > 0.0 && q <= 1.0) {
            return Err(SamplingError::SampleRate(q));
        }
        let trial = Bernoulli::new(q).map_err(|_| SamplingError::SampleRate(q))?;
        Ok(Self { q, trial })
    }

    /// q.
    pub fn get(self) -> f64 {
        self.q
    }

    /// The expected batch size q·n, the public constant DP-SGD divides by.
    pub fn expected_batch_size(self, n: usize) -> f64 {
        self.q * n as f64
    }
}

/// Appends to `out` (cleared first) the indices in `0..n`, in increasing order, that each joined independently
/// with probability `q`.
pub fn poisson_sample_into<R: Rng + ?Sized>(n: usize, q: SampleRate, rng: &mut R, out: &mut Vec<usize>) {
    out.clear();
    out.extend((0..n).filter(|_| q.trial.sample(rng)));
}

/// A Poisson batch sampler over a ChaCha12 CSPRNG (the algorithm of `rand`'s `StdRng`).
#[derive(Debug, Clone)]
pub struct PoissonSampler {
    rng: ChaCha12Rng,
    insecure: bool,
}

impl PoissonSampler {
    /// A sampler seeded by the operating system. Use this for real training.
    pub fn from_os() -> Self {
        Self { rng: ChaCha12Rng::from_os_rng(), insecure: false }
    }

    /// INSECURE: a deterministic sampler for reproducible simulation and tests only; the batches are
    /// predictable, so privacy amplification by sampling does not hold. Uses ChaCha12 stream 1 of the seed,
    /// so it never repeats the stream of [`crate::noise::GaussianNoise::from_insecure_seed`] with the same seed.
    pub fn from_insecure_seed(seed: u64) -> Self {
        let mut rng = ChaCha12Rng::seed_from_u64(seed);
        rng.set_stream(1);
        Self { rng, insecure: true }
    }

    /// Whether this sampler was seeded by hand.
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// The indices of one Poisson batch over `n` records at rate `q`, increasing; may be empty.
    pub fn sample(&mut self, n: usize, q: SampleRate) -> Vec<usize> {
        let mut out = Vec::with_capacity((q.expected_batch_size(n) * 1.2) as usize + 8);
        poisson_sample_into(n, q, &mut self.rng, &mut out);
        out
    }

    /// As [`PoissonSampler::sample`], reusing `out`'s allocation.
    pub fn sample_into(&mut self, n: usize, q: SampleRate, out: &mut Vec<usize>) {
        poisson_sample_into(n, q, &mut self.rng, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realized_rate_matches_q() {
        let mut sampler = PoissonSampler::from_insecure_seed(5);
        for q in [0.003, 0.03, 0.5] {
            let rate = SampleRate::new(q).unwrap();
            let (n, steps) = (1000, 200);
            let total: usize = (0..steps).map(|_| sampler.sample(n, rate).len()).sum();
            let trials = (n * steps) as f64;
            let realized = total as f64 / trials;
            // Normal approximation of the binomial, 4 standard errors (two-sided α ≈ 6e-5).
            assert!((realized - q).abs() < 4.0 * (q * (1.0 - q) / trials).sqrt(), "q {q}: realized {realized}");
        }
    }

    #[test]
    fn inclusions_are_independent_of_position() {
        // Every index is equally likely: the first and second halves get the same share (4 standard errors).
        let mut sampler = PoissonSampler::from_insecure_seed(7);
        let q = SampleRate::new(0.1).unwrap();
        let (mut first, mut second) = (0usize, 0usize);
        for _ in 0..500 {
            for i in sampler.sample(200, q) {
                if i < 100 { first += 1 } else { second += 1 }
            }
        }
        let trials = 500.0 * 100.0;
        let sd = (2.0 * trials * 0.1 * 0.9f64).sqrt();
        assert!(((first as f64) - (second as f64)).abs() < 4.0 * sd, "{first} vs {second}");
    }

    #[test]
    fn batches_vary_and_can_be_empty() {
        let mut sampler = PoissonSampler::from_insecure_seed(6);
        let q = SampleRate::new(0.1).unwrap();
        let sizes: Vec<usize> = (0..200).map(|_| sampler.sample(10, q).len()).collect();
        assert!(sizes.contains(&0));
        assert!(sizes.iter().any(|s| *s >= 3));
        assert_eq!(sampler.sample(10, SampleRate::new(1.0).unwrap()), (0..10).collect::<Vec<_>>());
        assert!(sampler.sample(0, q).is_empty());
    }

    #[test]
    fn rates_are_validated_and_seeds_behave() {
        for bad in [0.0, -0.1, 1.5, f64::NAN] {
            assert!(SampleRate::new(bad).is_err());
        }
        let q = SampleRate::new(0.5).unwrap();
        assert_eq!(
            PoissonSampler::from_insecure_seed(1).sample(64, q),
            PoissonSampler::from_insecure_seed(1).sample(64, q)
        );
        assert!(!PoissonSampler::from_os().is_insecure());
        assert!(PoissonSampler::from_insecure_seed(1).is_insecure());
    }
}

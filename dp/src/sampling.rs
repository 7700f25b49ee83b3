//! Poisson sampling of DP-SGD batches: each of the n records joins a step's batch independently with
//! probability q, so batch sizes are Binomial(n, q) and a batch may be empty.
//!
//! This is the sampling the RDP accountant of the subsampled Gaussian assumes (Abadi et al. 2016, "Deep
//! Learning with Differential Privacy"; Mironov, Talwar and Zhang 2019). Shuffled fixed-size batches would not
//! match it (Chua et al., ICML 2024, "How Private are DP-SGD Implementations?").
//!
//! Each inclusion is one Bernoulli(q) trial that joins when a uniform 64-bit integer U is below
//! t = ⌊q·2⁶⁴⌋ (as `rand::distr::Bernoulli` does): exact to 2⁻⁶⁴ and free of floating-point artefacts.
//!
//! # Fast and still exact: one byte per record
//! [`PoissonSampler`] compares U with t one byte at a time, most significant first, and draws U's lower bytes
//! only when they can matter: with U₀ the top byte and t₀ = ⌊t/2⁵⁶⌋, a record joins when U₀ < t₀, stays out when
//! U₀ > t₀, and only on U₀ = t₀ (probability 1/256) compares 56 further random bits with t mod 2⁵⁶. That is
//! P(join) = t₀/256 + (1/256)·(t mod 2⁵⁶)/2⁵⁶ = t/2⁶⁴, the same law as the full comparison, from about one
//! random byte per record instead of eight. Eight records are screened at once: a 64-bit word of eight
//! bytes is skipped when none of its bytes is ≤ t₀ (the "has less" bit trick of Anderson's Bit Twiddling Hacks,
//! which has no false negatives; every byte of a flagged word is then compared exactly), so at q = 0.01 about
//! 9 words in 10 cost one subtraction and two masks. The bytes come from AES-256 in counter mode (as the noise,
//! [`crate::noise`]), keyed by the operating system; the 56-bit tie-breaks come from a second counter-mode
//! stream of the same key (initial counter 2¹²⁷), so they never reuse a byte of the first.
//! [`poisson_sample_into`] is the plain one-word-per-record version over any `rand` generator.
//!
//! # Example
//! ```
//! use cohort_dp::sampling::{PoissonSampler, SampleRate};
//! let mut sampler = PoissonSampler::from_os();
//! let batch = sampler.sample(1000, SampleRate::new(0.01).unwrap());
//! assert!(batch.windows(2).all(|w| w[0] < w[1]) && batch.iter().all(|i| *i < 1000));
//! ```

use aes::Aes256;
use aes::cipher::{KeyIvInit, StreamCipher};
use ctr::Ctr128BE;
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

    /// t = ⌊q·2⁶⁴⌋, the threshold a uniform 64-bit integer is compared with (as in `rand`'s `Bernoulli`);
    /// `None` for q = 1 (always join).
    fn threshold(self) -> Option<u64> {
        // 2⁶⁴ as f64 is exact, and q·2⁶⁴ < 2⁶⁴ for q < 1, so the conversion does not saturate.
        (self.q < 1.0).then_some((self.q * 18_446_744_073_709_551_616.0) as u64)
    }
}

/// Appends to `out` (cleared first) the indices in `0..n`, in increasing order, that each joined independently
/// with probability `q`.
pub fn poisson_sample_into<R: Rng + ?Sized>(n: usize, q: SampleRate, rng: &mut R, out: &mut Vec<usize>) {
    out.clear();
    out.extend((0..n).filter(|_| q.trial.sample(rng)));
}

/// Random bytes per refill of a [`PoissonSampler`] (4 KiB).
const BYTES: usize = 4096;

/// A Poisson batch sampler: one byte per record from AES-256-CTR, exact (see the [module docs](self)).
#[derive(Clone)]
pub struct PoissonSampler {
    /// Bytes screened against the top byte of the threshold.
    bytes: Ctr128BE<Aes256>,
    /// The 56-bit tie-breaks.
    ties: Ctr128BE<Aes256>,
    buffer: Box<[u8; BYTES]>,
    insecure: bool,
}

impl std::fmt::Debug for PoissonSampler {
    /// Shows neither the key nor the stream position.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoissonSampler").field("insecure", &self.insecure).finish_non_exhaustive()
    }
}

impl PoissonSampler {
    fn from_key(key: [u8; 32], insecure: bool) -> Self {
        let tie_iv = 1u128 << 127;
        Self {
            bytes: Ctr128BE::new(&key.into(), &[0u8; 16].into()),
            ties: Ctr128BE::new(&key.into(), &tie_iv.to_be_bytes().into()),
            buffer: Box::new([0; BYTES]),
            insecure,
        }
    }

    /// A sampler keyed by the operating system (256 bits). Use this for real training.
    pub fn from_os() -> Self {
        // `from_os_rng` reads 32 bytes from the operating system (getrandom); its seed is the key.
        Self::from_key(ChaCha12Rng::from_os_rng().get_seed(), false)
    }

    /// INSECURE: a deterministic sampler for reproducible simulation and tests only; the batches are
    /// predictable, so privacy amplification by sampling does not hold. The key is the first 32 bytes of
    /// ChaCha12 stream 1 of the seed, so it never repeats the key of
    /// [`crate::noise::GaussianNoise::from_insecure_seed`] (stream 0) with the same seed.
    pub fn from_insecure_seed(seed: u64) -> Self {
        let mut rng = ChaCha12Rng::seed_from_u64(seed);
        rng.set_stream(1);
        Self::from_key(rng.random(), true)
    }

    /// Whether this sampler was seeded by hand.
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// The indices of one Poisson batch over `n` records at rate `q`, increasing; may be empty.
    pub fn sample(&mut self, n: usize, q: SampleRate) -> Vec<usize> {
        let mut out = Vec::with_capacity((q.expected_batch_size(n) * 1.2) as usize + 8);
        self.sample_into(n, q, &mut out);
        out
    }

    /// As [`PoissonSampler::sample`], reusing `out`'s allocation (cleared first).
    pub fn sample_into(&mut self, n: usize, q: SampleRate, out: &mut Vec<usize>) {
        out.clear();
        let Some(t) = q.threshold() else {
            out.extend(0..n);
            return;
        };
        let (top, low) = ((t >> 56) as u8, t & ((1 << 56) - 1));
        // Words with no byte ≤ top are skipped whole (for top ≤ 127; above that nearly every word is flagged
        // and every byte is compared).
        let screen = u32::from(top) < 128;
        let ones = u64::from_ne_bytes([1; 8]);
        let (below, high) = (ones * (u64::from(top) + 1), ones * 0x80);
        let mut start = 0;
        while start < n {
            let len = BYTES.min(n - start);
            let buffer = &mut self.buffer[..len];
            buffer.fill(0);
            self.bytes.apply_keystream(buffer);
            for (w, word) in buffer.chunks(8).enumerate() {
                if screen && word.len() == 8 {
                    let x = u64::from_le_bytes(word.try_into().expect("8 bytes"));
                    if x.wrapping_sub(below) & !x & high == 0 {
                        continue;
                    }
                }
                for (b, byte) in word.iter().enumerate() {
                    if joins(*byte, top, low, || tie(&mut self.ties)) {
                        out.push(start + 8 * w + b);
                    }
                }
            }
            start += len;
        }
    }
}

/// Whether a record with top random byte `byte` joins, for t = `top`·2⁵⁶ + `low`: `U < t` for
/// U = `byte`·2⁵⁶ + `tie()`, calling `tie` (56 more random bits) only when `byte` = `top`.
#[inline(always)]
fn joins(byte: u8, top: u8, low: u64, tie: impl FnOnce() -> u64) -> bool {
    byte < top || (byte == top && tie() < low)
}

/// 56 fresh random bits from `stream`.
fn tie(stream: &mut Ctr128BE<Aes256>) -> u64 {
    let mut word = [0u8; 8];
    stream.apply_keystream(&mut word[1..]);
    u64::from_be_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_decision_is_the_full_64_bit_comparison() {
        let mut rng = ChaCha12Rng::seed_from_u64(1);
        let edges = [0u64, 1, (1 << 56) - 1, 1 << 56, (1 << 56) + 1, u64::MAX - 1, u64::MAX];
        for i in 0..200_000 {
            let (u, t): (u64, u64) = if i < 49 { (edges[i % 7], edges[i / 7]) } else { (rng.random(), rng.random()) };
            // Also ties on the top byte, the case that reads the tie-break bits.
            let u = if i % 3 == 0 { (t & (0xff << 56)) | (u >> 8) } else { u };
            let (top, low) = ((t >> 56) as u8, t & ((1 << 56) - 1));
            assert_eq!(joins((u >> 56) as u8, top, low, || u & ((1 << 56) - 1)), u < t, "U {u:#x}, t {t:#x}");
        }
    }

    #[test]
    fn screening_eight_bytes_at_once_changes_no_decision() {
        // The same streams compared byte by byte, without skipping words, give the same batches.
        for q in [1e-4, 0.003, 0.01, 0.3, 0.4999, 0.5, 0.77, 0.999] {
            let rate = SampleRate::new(q).unwrap();
            let (top, low) = (rate.threshold().unwrap() >> 56, rate.threshold().unwrap() & ((1 << 56) - 1));
            let mut fast = PoissonSampler::from_insecure_seed(9);
            let mut slow = fast.clone();
            for n in [0, 1, 7, 8, 9, 1000, BYTES + 13] {
                let batch = fast.sample(n, rate);
                let mut bytes = vec![0u8; n];
                for piece in bytes.chunks_mut(BYTES) {
                    slow.bytes.apply_keystream(piece);
                }
                let want: Vec<usize> =
                    (0..n).filter(|i| joins(bytes[*i], top as u8, low, || tie(&mut slow.ties))).collect();
                assert_eq!(batch, want, "q {q}, n {n}");
            }
        }
    }

    #[test]
    fn realized_rate_matches_q() {
        let mut sampler = PoissonSampler::from_insecure_seed(5);
        for q in [1e-3, 0.003, 0.01, 0.03, 0.5, 0.9] {
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

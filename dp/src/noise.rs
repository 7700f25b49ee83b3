//! Gaussian noise N(0, σ²C²) for DP-SGD, from an AES-256 counter-mode CSPRNG keyed by the operating system.
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
//! distribution (the Gaussian is infinitely divisible, the property the paper's construction needs), and whose
//! low-order bits are a sum of four independent draws' bits, so the gaps and structure of any single draw's
//! floating-point output are smoothed out. Each draw comes from the ziggurat of Marsaglia and Tsang 2000 with
//! the tables, constants and bit use of `rand_distr::StandardNormal` (f64, one 64-bit word per draw on the fast
//! path, 52-bit mantissas). Bulk noise evaluates the four draws of a value together ([`Ziggurat`]): the four
//! fast-path tests run side by side, and only a value one of whose draws misses (about 4.7% of values) takes
//! the slow path, fed from a reserve stream of the chunk's keystream. Each draw is the same function of its
//! words as in `rand_distr`, so its distribution is unchanged. The result is scaled by σ·C in f64 and then
//! rounded to f32 once (or added to the f32 gradient in f64 and rounded once). The mitigation is unchanged
//! from earlier versions of this module; only the source of random words and the way they are scheduled
//! changed.
//!
//! # Random words: AES-256 in counter mode
//! Noise generation dominates the cost of a DP-SGD step (a 200k-parameter model needs 800k normal draws per
//! step, 6.5 MB of random words). The words are the keystream of AES-256 in counter mode (NIST SP 800-38A;
//! the construction of the CTR_DRBG of NIST SP 800-90A), from the RustCrypto `aes` and `ctr` crates, which use
//! the AES-NI instructions when the CPU has them (detected at run time) and a constant-time bitsliced software
//! AES otherwise. On the 2-core benchmark machine AES-256-CTR gives about 8.4 GB/s against 3.5 GB/s for the
//! SIMD ChaCha12 of the `chacha20` crate and 1.9 GB/s for `rand_chacha`'s ChaCha12 (measured while writing
//! this module). A key is 256 bits from the operating system ([`GaussianNoise::from_os`]); an attacker who
//! cannot distinguish AES-256 from a random permutation cannot tell the noise from ideal Gaussian noise
//! (beyond the floating-point effects the sum of draws addresses).
//!
//! # Chunks: the same noise on any number of threads
//! The output is cut into chunks of [`CHUNK`] values. Chunk number `j` (counted from 0 for each source) is
//! drawn from the counter-mode stream whose 128-bit initial counter block is `j · 2⁶⁴`, so chunks are disjoint
//! stretches of one keystream that never overlap (a chunk would need 2⁶⁴ blocks to reach the next one) and
//! any thread can draw any chunk. The noise is therefore a function of the key and the order of the calls
//! only, never of how many threads drew it: the seeded path ([`GaussianNoise::from_insecure_seed`])
//! reproduces bit for bit, and the DP-SGD loop ([`crate::sgd`]) can share a step's chunks between a worker
//! thread and the training thread. Every call starts at a fresh chunk, so a stretch of keystream is never used
//! twice; single values ([`GaussianNoise::standard`]) come from one chunk of their own, read in order.
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
use aes::Aes256;
use aes::cipher::{InnerIvInit, KeyInit, StreamCipher};
use ctr::{Ctr128BE, CtrCore};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;
use rand_distr::{Distribution, StandardNormal};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};

/// How many independent standard normals make one noise value (Opacus secure mode uses 4).
pub const SECURE_DRAWS: usize = 4;

/// Noise values per chunk: the unit of work a thread draws at once, and the stretch of keystream (2⁶⁴ blocks)
/// that each chunk owns (see the [module docs](self)).
pub const CHUNK: usize = 2048;

/// 64-bit words of keystream produced per call to the cipher (4 KiB).
const WORDS: usize = 512;

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

/// The 64-bit words of one chunk's AES-256-CTR keystream, read in order, as a `rand` generator for the
/// ziggurat.
struct Keystream {
    cipher: Ctr128BE<Aes256>,
    bytes: [u8; WORDS * 8],
    next: usize,
}

impl Keystream {
    /// Chunk `index`'s stream: initial counter block `index · 2⁶⁴`.
    fn new(aes: &Aes256, index: u64) -> Self {
        Self::at(aes, index, 0)
    }

    /// Chunk `index`'s reserve for the ziggurat's rare slow path: initial counter block `index · 2⁶⁴ + 2⁶³`,
    /// 2⁶³ blocks after the main stream starts, so the two never meet.
    fn reserve(aes: &Aes256, index: u64) -> Self {
        Self::at(aes, index, 1 << 63)
    }

    fn at(aes: &Aes256, index: u64, block: u64) -> Self {
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&index.to_be_bytes());
        iv[8..].copy_from_slice(&block.to_be_bytes());
        let cipher = Ctr128BE::from_core(CtrCore::inner_iv_init(aes.clone(), &iv.into()));
        Self { cipher, bytes: [0; WORDS * 8], next: WORDS }
    }

    /// The next four words ([`WORDS`] is a multiple of four, so they come from one refill).
    #[inline]
    fn next4(&mut self) -> [u64; 4] {
        if self.next == WORDS {
            self.refill();
        }
        let at = self.next * 8;
        self.next += 4;
        let b = &self.bytes[at..at + 32];
        std::array::from_fn(|i| u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().expect("8 bytes")))
    }

    /// A uniform value in [0, 1) with 53 random bits (as `rand`'s `StandardUniform`).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform value in (0, 1) (as `rand`'s `Open01`).
    fn open01(&mut self) -> f64 {
        f64::from_bits((self.next_u64() >> 12) | (1023 << 52)) - (1.0 - f64::EPSILON / 2.0)
    }

    fn refill(&mut self) {
        self.bytes.fill(0);
        self.cipher.apply_keystream(&mut self.bytes);
        self.next = 0;
    }

    /// One N(0, 1) value: the sum of [`SECURE_DRAWS`] ziggurat draws divided by √[`SECURE_DRAWS`].
    #[inline]
    fn standard(&mut self) -> f64 {
        let mut sum = 0.0f64;
        for _ in 0..SECURE_DRAWS {
            let z: f64 = StandardNormal.sample(self);
            sum += z;
        }
        // 1/√4 = 0.5 exactly; keep the general form for other draw counts.
        sum * (1.0 / (SECURE_DRAWS as f64).sqrt())
    }
}

impl RngCore for Keystream {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }

    #[inline]
    fn next_u64(&mut self) -> u64 {
        if self.next == WORDS {
            self.refill();
        }
        let at = self.next * 8;
        self.next += 1;
        u64::from_le_bytes(self.bytes[at..at + 8].try_into().expect("8 bytes"))
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// Noise for `len` values in chunks numbered from `first`: a description any thread can draw from.
#[derive(Clone)]
pub(crate) struct NoiseJob {
    aes: Aes256,
    first: u64,
    len: usize,
    std: f64,
}

impl NoiseJob {
    /// Number of chunks.
    pub(crate) fn chunks(&self) -> usize {
        self.len.div_ceil(CHUNK)
    }

    /// The range of values chunk `k` covers.
    pub(crate) fn range(&self, k: usize) -> std::ops::Range<usize> {
        k * CHUNK..((k + 1) * CHUNK).min(self.len)
    }

    /// Overwrites `out` (chunk `k`'s length) with chunk `k`'s noise values.
    pub(crate) fn fill_chunk(&self, k: usize, out: &mut [f32]) {
        debug_assert_eq!(out.len(), self.range(k).len());
        self.draw_chunk(k, out, |v, z| *v = z as f32);
    }

    /// Adds chunk `k`'s noise values to `out` (chunk `k`'s length), rounding once.
    fn add_chunk(&self, k: usize, out: &mut [f32]) {
        self.draw_chunk(k, out, |v, z| *v = (f64::from(*v) + z) as f32);
    }

    /// Calls `put(v, z)` for every value of `out` in order with its noise value z = σ·(x₀+x₁+x₂+x₃)/2, the
    /// x_i standard normals from the block ziggurat ([`Ziggurat`]).
    #[inline]
    fn draw_chunk(&self, k: usize, out: &mut [f32], mut put: impl FnMut(&mut f32, f64)) {
        const { assert!(SECURE_DRAWS == 4 && WORDS.is_multiple_of(SECURE_DRAWS)) };
        let index = self.first + k as u64;
        let mut main = Keystream::new(&self.aes, index);
        let mut reserve: Option<Box<Keystream>> = None;
        let zig = &*ZIGGURAT;
        let scale = self.std * (1.0 / (SECURE_DRAWS as f64).sqrt());
        for v in out {
            let words = main.next4();
            let draws = words.map(|w| zig.fast(w));
            let sum = if draws.iter().all(|(_, accepted)| *accepted) {
                draws[0].0 + draws[1].0 + draws[2].0 + draws[3].0
            } else {
                let reserve = reserve.get_or_insert_with(|| Box::new(Keystream::reserve(&self.aes, index)));
                let x: [f64; 4] =
                    std::array::from_fn(|i| if draws[i].1 { draws[i].0 } else { zig.slow(words[i], reserve) });
                x[0] + x[1] + x[2] + x[3]
            };
            put(v, sum * scale);
        }
    }
}

/// The ziggurat of Marsaglia and Tsang 2000 ("The Ziggurat Method for Generating Random Variables", J. Stat.
/// Software 5(8)) for N(0, 1) with 256 layers, as `rand_distr::StandardNormal` implements it (same constants,
/// same use of each 64-bit word: the low 8 bits pick the layer, the top 52 make the signed uniform), evaluated
/// for four words at once on the fast path (98.8% of draws) so that the four draws of one noise value run
/// without a data-dependent branch between them. A draw that misses the fast path finishes exactly as in
/// `rand_distr` (wedge test, or the Marsaglia 1964 tail for layer 0, then a fresh draw), with words from the
/// chunk's reserve stream.
struct Ziggurat {
    /// Layer edges: `x[0] = v/f(r)`, `x[1] = r`, …, `x[256] = 0`.
    x: [f64; 257],
    /// `f[i] = f(x[i])`, f(x) = exp(−x²/2).
    f: [f64; 257],
}

/// The right edge r of the base layer (as in `rand_distr`).
const ZIG_R: f64 = 3.654_152_885_361_009;
/// The area v of each layer (as in `rand_distr`'s table generator).
const ZIG_V: f64 = 0.004_928_673_233_99;

/// The tables, computed once by the Marsaglia–Tsang recurrence x_{i+1} = f⁻¹(v/x_i + f(x_i)).
static ZIGGURAT: LazyLock<Ziggurat> = LazyLock::new(|| {
    let mut x = [0.0f64; 257];
    x[0] = ZIG_V / pdf(ZIG_R);
    x[1] = ZIG_R;
    for i in 2..256 {
        x[i] = (-2.0 * (ZIG_V / x[i - 1] + pdf(x[i - 1])).ln()).sqrt();
    }
    Ziggurat { x, f: x.map(pdf) }
});

/// The unnormalized standard normal density exp(−x²/2).
fn pdf(x: f64) -> f64 {
    (-x * x / 2.0).exp()
}

impl Ziggurat {
    /// Layer, signed uniform in [−1, 1) and candidate of a word.
    #[inline(always)]
    fn parts(&self, w: u64) -> (usize, f64, f64) {
        let i = (w & 0xff) as usize;
        let u = f64::from_bits((w >> 12) | (1024 << 52)) - 3.0;
        (i, u, u * self.x[i])
    }

    /// The candidate of word `w` and whether the fast path accepts it.
    #[inline(always)]
    fn fast(&self, w: u64) -> (f64, bool) {
        let (i, _, x) = self.parts(w);
        (x, x.abs() < self.x[i + 1])
    }

    /// The draw that starts with word `w`, whose fast path failed, finished with words from `rs`.
    #[cold]
    fn slow(&self, mut w: u64, rs: &mut Keystream) -> f64 {
        loop {
            let (i, u, x) = self.parts(w);
            if i == 0 {
                return Self::tail(u, rs);
            }
            if self.f[i + 1] + (self.f[i] - self.f[i + 1]) * rs.uniform() < pdf(x) {
                return x;
            }
            w = rs.next_u64();
            let (x, accepted) = self.fast(w);
            if accepted {
                return x;
            }
        }
    }

    /// A draw beyond ±r (Marsaglia 1964), on the side of `u`.
    fn tail(u: f64, rs: &mut Keystream) -> f64 {
        loop {
            let x = rs.open01().ln() / ZIG_R;
            let y = rs.open01().ln();
            if -2.0 * y >= x * x {
                return if u < 0.0 { x - ZIG_R } else { ZIG_R - x };
            }
        }
    }
}

/// A source of Gaussian noise for DP-SGD (see the [module docs](self) for the sampler).
///
/// Cloning a source duplicates its future noise: never use both copies for real releases.
#[derive(Clone)]
pub struct GaussianNoise {
    aes: Aes256,
    /// The next unused chunk number.
    next_chunk: u64,
    /// The stream of single values ([`GaussianNoise::standard`]), opened at first use.
    single: Option<Box<Keystream>>,
    insecure: bool,
}

impl Clone for Keystream {
    fn clone(&self) -> Self {
        Self { cipher: self.cipher.clone(), bytes: self.bytes, next: self.next }
    }
}

impl std::fmt::Debug for GaussianNoise {
    /// Shows neither the key nor the stream position.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GaussianNoise").field("insecure", &self.insecure).finish_non_exhaustive()
    }
}

impl GaussianNoise {
    fn from_key(key: [u8; 32], insecure: bool) -> Self {
        Self { aes: Aes256::new(&key.into()), next_chunk: 0, single: None, insecure }
    }

    /// Noise from an AES-256-CTR CSPRNG with a 256-bit key from the operating system. Use this for real
    /// training.
    pub fn from_os() -> Self {
        // `from_os_rng` reads 32 bytes from the operating system (getrandom); its seed is the key.
        Self::from_key(ChaCha12Rng::from_os_rng().get_seed(), false)
    }

    /// INSECURE: deterministic noise from a fixed seed, for reproducible simulation and tests only. Anyone
    /// who knows the seed can subtract the noise, so this provides **no privacy**. The key is the first
    /// 32 bytes of ChaCha12 stream 0 of `seed` (the Poisson sampler of the same seed uses stream 1).
    pub fn from_insecure_seed(seed: u64) -> Self {
        Self::from_key(ChaCha12Rng::seed_from_u64(seed).random(), true)
    }

    /// Whether this source was seeded by hand (and so gives no privacy).
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// Reserves the chunks for `len` values of N(0, std²) noise, to be drawn by any thread.
    pub(crate) fn job(&mut self, len: usize, std: f64) -> NoiseJob {
        let job = NoiseJob { aes: self.aes.clone(), first: self.next_chunk, len, std };
        self.next_chunk += job.chunks() as u64;
        job
    }

    /// One N(0, 1) value: the sum of [`SECURE_DRAWS`] ziggurat draws divided by √[`SECURE_DRAWS`].
    pub fn standard(&mut self) -> f64 {
        if self.single.is_none() {
            let index = self.next_chunk;
            self.next_chunk += 1;
            self.single = Some(Box::new(Keystream::new(&self.aes, index)));
        }
        self.single.as_mut().expect("opened above").standard()
    }

    /// One N(0, std²) value (for `std` ≥ 0). DP code should prefer [`GaussianNoise::add_dp_noise`], whose
    /// newtypes are validated.
    pub fn sample(&mut self, std: f64) -> f64 {
        self.standard() * std
    }

    /// Overwrites every value with independent N(0, std²) noise (rounded to f32 once).
    pub fn fill(&mut self, values: &mut [f32], std: f64) {
        let job = self.job(values.len(), std);
        for (k, chunk) in values.chunks_mut(CHUNK).enumerate() {
            job.fill_chunk(k, chunk);
        }
    }

    /// Adds independent N(0, std²) noise to every value. Adding to zeros gives exactly what
    /// [`GaussianNoise::fill`] would have written.
    pub fn add_to(&mut self, values: &mut [f32], std: f64) {
        let job = self.job(values.len(), std);
        for (k, chunk) in values.chunks_mut(CHUNK).enumerate() {
            job.add_chunk(k, chunk);
        }
    }

    /// Adds the DP-SGD noise N(0, σ²C²) to every coordinate.
    pub fn add_dp_noise(&mut self, values: &mut [f32], sigma: NoiseMultiplier, clip: ClipNorm) {
        self.add_to(values, sigma.get() * f64::from(clip.get()));
    }
}

/// One chunk of a [`SharedNoise`] buffer.
struct Slot {
    values: Vec<f32>,
    /// Whether `values` holds the current job's chunk.
    drawn: bool,
}

/// A noise buffer that several threads fill together: each claims chunks of the current [`NoiseJob`] from a
/// shared counter and draws them under the chunk's own lock, and the reader draws any chunk still missing
/// itself. The values are those of [`GaussianNoise::fill`] whoever draws them.
pub(crate) struct SharedNoise {
    job: Mutex<Option<NoiseJob>>,
    claimed: AtomicUsize,
    slots: Vec<Mutex<Slot>>,
}

impl SharedNoise {
    /// A buffer for `len` values, with no job yet.
    pub(crate) fn new(len: usize) -> Self {
        let slots = (0..len.div_ceil(CHUNK))
            .map(|k| Mutex::new(Slot { values: vec![0.0; CHUNK.min(len - k * CHUNK)], drawn: false }))
            .collect();
        Self { job: Mutex::new(None), claimed: AtomicUsize::new(0), slots }
    }

    /// Starts `job` (of this buffer's length): every chunk is to be drawn again. Call only while no other
    /// thread is drawing into this buffer.
    ///
    /// # Panics
    /// If `job` has a different number of chunks (a bug).
    pub(crate) fn start(&self, job: NoiseJob) {
        assert_eq!(job.chunks(), self.slots.len(), "noise job and buffer differ in length");
        for slot in &self.slots {
            lock(slot).drawn = false;
        }
        *self.job.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(job);
        self.claimed.store(0, Ordering::SeqCst);
    }

    fn current(&self) -> NoiseJob {
        self.job.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone().expect("a started job")
    }

    /// Draws unclaimed chunks until none is left.
    pub(crate) fn work(&self) {
        let total = self.slots.len();
        if self.claimed.load(Ordering::SeqCst) >= total {
            return;
        }
        let job = self.current();
        loop {
            let k = self.claimed.fetch_add(1, Ordering::SeqCst);
            if k >= total {
                return;
            }
            let mut slot = lock(&self.slots[k]);
            if !slot.drawn {
                job.fill_chunk(k, &mut slot.values);
                slot.drawn = true;
            }
        }
    }

    /// Calls `f(range, values)` on every chunk in order, once it is drawn. This thread first draws the
    /// unclaimed chunks itself rather than wait for them, so a step never waits on a busy worker for more than
    /// the chunk it is drawing; a chunk claimed but not yet begun elsewhere is drawn here too (its claimant
    /// then skips it).
    pub(crate) fn for_each(&self, mut f: impl FnMut(std::ops::Range<usize>, &[f32])) {
        self.work();
        let job = self.current();
        for (k, slot) in self.slots.iter().enumerate() {
            let mut slot = lock(slot);
            if !slot.drawn {
                job.fill_chunk(k, &mut slot.values);
                slot.drawn = true;
            }
            f(job.range(k), &slot.values);
        }
    }
}

/// Locks `m`, ignoring poison (a panicking drawer leaves `drawn = false`, and the chunk is drawn again).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
    fn bulk_noise_across_many_chunks_is_standard_normal() {
        // 60 chunks and a partial one, through the chunked path DP-SGD uses.
        let n = 60 * CHUNK + 123;
        let mut values = vec![0.0f32; n];
        GaussianNoise::from_insecure_seed(21).fill(&mut values, 1.0);
        let mut xs: Vec<f64> = values.iter().map(|v| f64::from(*v)).collect();
        let nf = n as f64;
        let mean = xs.iter().sum::<f64>() / nf;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (nf - 1.0);
        assert!(mean.abs() < 4.0 / nf.sqrt(), "mean {mean}");
        assert!((var - 1.0).abs() < 4.0 * (2.0 / (nf - 1.0)).sqrt(), "variance {var}");
        // Tails beyond 2σ and 3.5σ, against binomial standard errors.
        for k in [2.0, 3.5] {
            let p = 2.0 * (1.0 - phi(k));
            let tail = xs.iter().filter(|x| x.abs() > k).count() as f64 / nf;
            assert!((tail - p).abs() < 4.0 * (p * (1.0 - p) / nf).sqrt(), "tail beyond {k}: {tail} vs {p}");
        }
        // The last value of every chunk and the first of the next are not related (no chunk repeats another).
        let firsts: Vec<f32> = values.chunks(CHUNK).map(|c| c[0]).collect();
        let mut unique = firsts.clone();
        unique.sort_by(f32::total_cmp);
        unique.dedup();
        assert_eq!(unique.len(), firsts.len());
        let d = ks_statistic(&mut xs, 0.0, 1.0);
        assert!(ks_p_value(d, n) > ALPHA, "KS D = {d}, p = {}", ks_p_value(d, n));
    }

    #[test]
    fn the_same_noise_whoever_draws_the_chunks() {
        let len = 7 * CHUNK + 5;
        let mut alone = vec![0.0f32; len];
        GaussianNoise::from_insecure_seed(3).fill(&mut alone, 0.7);
        for threads in [1, 2, 3] {
            let shared = SharedNoise::new(len);
            let mut noise = GaussianNoise::from_insecure_seed(3);
            shared.start(noise.job(len, 0.7));
            std::thread::scope(|scope| {
                for _ in 1..threads {
                    scope.spawn(|| shared.work());
                }
                let mut together = vec![0.0f32; len];
                shared.for_each(|range, z| together[range].copy_from_slice(z));
                assert_eq!(together, alone, "{threads} threads");
            });
        }
        // Adding to zeros is filling.
        let mut added = vec![0.0f32; len];
        GaussianNoise::from_insecure_seed(3).add_to(&mut added, 0.7);
        assert_eq!(added, alone);
    }

    #[test]
    fn every_call_draws_fresh_keystream() {
        let mut noise = GaussianNoise::from_insecure_seed(4);
        let (mut a, mut b) = (vec![0.0f32; 100], vec![0.0f32; 100]);
        noise.fill(&mut a, 1.0);
        noise.fill(&mut b, 1.0);
        assert!(a.iter().zip(&b).all(|(x, y)| x != y));
        // Single values come from a chunk of their own, not from the start of a later fill.
        let single = noise.standard();
        let mut c = vec![0.0f32; 1];
        noise.fill(&mut c, 1.0);
        assert_ne!(single as f32, c[0]);
        let mut again = GaussianNoise::from_insecure_seed(4);
        let mut a2 = vec![0.0f32; 100];
        again.fill(&mut a2, 1.0);
        assert_eq!(a, a2);
    }

    #[test]
    fn seeded_noise_is_pinned() {
        // The insecure path reproduces bit for bit across builds and platforms: AES-256-CTR and the ziggurat are
        // exact integer and IEEE operations. A change here changes every seeded simulation.
        let mut values = vec![0.0f32; 4];
        GaussianNoise::from_insecure_seed(0).fill(&mut values, 1.0);
        let bits: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, PINNED, "{values:?}");
    }

    const PINNED: [u32; 4] = [3210985665, 1066799811, 1063289104, 3213113150];

    #[test]
    fn chunk_j_is_the_aes_256_ctr_stream_from_counter_block_j_times_2_to_the_64() {
        use aes::cipher::BlockEncrypt;
        let aes = Aes256::new(&[9u8; 32].into());
        for j in [0u64, 1, 77, u64::MAX] {
            let mut stream = Keystream::new(&aes, j);
            let words: Vec<u64> = (0..4).map(|_| stream.next_u64()).collect();
            for (i, pair) in words.chunks(2).enumerate() {
                let mut block = [0u8; 16];
                block[..8].copy_from_slice(&j.to_be_bytes());
                block[8..].copy_from_slice(&(i as u64).to_be_bytes());
                let mut block = block.into();
                aes.encrypt_block(&mut block);
                let want = [
                    u64::from_le_bytes(block[..8].try_into().unwrap()),
                    u64::from_le_bytes(block[8..].try_into().unwrap()),
                ];
                assert_eq!(pair, want, "chunk {j}, block {i}");
            }
        }
    }

    #[test]
    fn ziggurat_tables_match_rand_distr() {
        // Entries of `rand_distr` 0.5's ZIG_NORM_X and ZIG_NORM_F.
        let z = &*ZIGGURAT;
        for (i, want) in
            [(0, 3.910_757_959_537_09), (2, 3.4492782985609645), (128, 1.5353425714388431), (255, 0.2152418959132738)]
        {
            assert!((z.x[i] - want).abs() < 1e-12 * want, "x[{i}] = {} vs {want}", z.x[i]);
        }
        assert_eq!(z.x[256], 0.0);
        for (i, want) in [(0, 0.000477467764586655), (128, 0.30769741250555377), (255, 0.9771017012827313)] {
            assert!((z.f[i] - want).abs() < 1e-12 * want, "f[{i}] = {} vs {want}", z.f[i]);
        }
        assert_eq!(z.f[256], 1.0);
    }

    /// Yields `first`, then the words of `rest`: one `rand_distr` draw that starts with a given word.
    struct Prefixed<'a> {
        first: Option<u64>,
        rest: &'a mut Keystream,
    }

    impl RngCore for Prefixed<'_> {
        fn next_u32(&mut self) -> u32 {
            self.next_u64() as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.first.take().unwrap_or_else(|| self.rest.next_u64())
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            self.rest.fill_bytes(dst)
        }
    }

    #[test]
    fn each_draw_is_rand_distrs_standard_normal_of_the_same_words() {
        // 200k draws, about 2.4k of them through the slow path: ours and `rand_distr`'s ziggurat, given the same
        // first word and the same later words, agree (to the last bits of the tables, which are recomputed
        // here) and read the same number of later words.
        let aes = Aes256::new(&[8u8; 32].into());
        let (mut main, mut ours, mut theirs) =
            (Keystream::new(&aes, 0), Keystream::reserve(&aes, 0), Keystream::reserve(&aes, 0));
        let z = &*ZIGGURAT;
        let mut slow = 0;
        for _ in 0..200_000 {
            let w = main.next_u64();
            let (fast, accepted) = z.fast(w);
            let x = if accepted {
                fast
            } else {
                slow += 1;
                z.slow(w, &mut ours)
            };
            let want: f64 = StandardNormal.sample(&mut Prefixed { first: Some(w), rest: &mut theirs });
            assert!((x - want).abs() <= 1e-12 * want.abs().max(1.0), "{x} vs {want}");
            assert_eq!(ours.next, theirs.next);
        }
        assert!((1_500..3_500).contains(&slow), "{slow} slow draws");
    }

    #[test]
    fn a_million_block_ziggurat_values_pass_ks_and_the_4_sigma_tails() {
        let n = 1 << 20;
        let mut values = vec![0.0f32; n];
        GaussianNoise::from_insecure_seed(31).fill(&mut values, 1.0);
        let mut xs: Vec<f64> = values.iter().map(|v| f64::from(*v)).collect();
        let nf = n as f64;
        let mean = xs.iter().sum::<f64>() / nf;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (nf - 1.0);
        let kurtosis = xs.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / nf / (var * var);
        assert!(mean.abs() < 4.0 / nf.sqrt(), "mean {mean}");
        assert!((var - 1.0).abs() < 4.0 * (2.0 / (nf - 1.0)).sqrt(), "variance {var}");
        // The kurtosis of a normal is 3, with standard error √(24/n).
        assert!((kurtosis - 3.0).abs() < 4.0 * (24.0 / nf).sqrt(), "kurtosis {kurtosis}");
        for k in [1.0, 2.0, 3.0, 3.654, 4.0] {
            let p = 2.0 * (1.0 - phi(k));
            let tail = xs.iter().filter(|x| x.abs() > k).count() as f64 / nf;
            assert!((tail - p).abs() < 4.0 * (p * (1.0 - p) / nf).sqrt(), "tail beyond {k}: {tail} vs {p}");
        }
        let d = ks_statistic(&mut xs, 0.0, 1.0);
        assert!(ks_p_value(d, n) > ALPHA, "KS D = {d}, p = {}", ks_p_value(d, n));
    }

    #[test]
    fn the_slow_path_covers_the_tail_and_the_wedges() {
        // Draws forced through the slow path (layer 0 = the tail, layer 5 = a wedge) are still N(0, 1)
        // restricted to where those layers put them: beyond r for the tail, inside layer 5's x-range otherwise.
        let z = &*ZIGGURAT;
        let mut rs = Keystream::new(&Aes256::new(&[5u8; 32].into()), 0);
        // Layer 0 with u = 1 − 2⁻⁵¹ and u = −1: outside the base rectangle, so into the tail on u's side.
        for (w, negative) in [(((1u64 << 52) - 1) << 12, false), (0, true)] {
            assert!(!z.fast(w).1);
            for _ in 0..100 {
                let x = z.slow(w, &mut rs);
                assert!(x.abs() > ZIG_R, "{x}");
                assert_eq!(x < 0.0, negative);
            }
        }
        // Layer 5 words that miss the fast path: the wedge test keeps x (|x| between the layer's edges) or
        // starts a fresh draw; both happen.
        let (mut kept, mut fresh) = (0, 0);
        for _ in 0..20_000 {
            let w = (rs.next_u64() & !0xff) | 5;
            if z.fast(w).1 {
                continue;
            }
            let (_, _, candidate) = z.parts(w);
            let x = z.slow(w, &mut rs);
            assert!(x.is_finite());
            if x == candidate {
                assert!(x.abs() >= z.x[6] && x.abs() < z.x[5]);
                kept += 1;
            } else {
                fresh += 1;
            }
        }
        assert!(kept > 0 && fresh > 0, "{kept} kept, {fresh} fresh");
    }

    #[test]
    fn debug_output_hides_the_key() {
        let text = format!("{:?}", GaussianNoise::from_insecure_seed(1));
        assert_eq!(text, "GaussianNoise { insecure: true, .. }");
    }

    #[test]
    fn noise_multiplier_is_validated() {
        assert!(NoiseMultiplier::new(0.0).is_ok());
        for bad in [-0.1, f64::NAN, f64::INFINITY] {
            assert!(NoiseMultiplier::new(bad).is_err());
        }
    }
}
